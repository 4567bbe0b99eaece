"""DICOM in, DICOM out: stored pixel values and every header element survive the round trip."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid  # noqa: E402

import hpac  # noqa: E402
from hpac import codec, container, fileformat
from hpac.io import dicom  # noqa: E402
from hpac.io.readers import read_image  # noqa: E402
from conftest import smooth_image  # noqa: E402


def make_dicom(pixels: np.ndarray, bits_stored: int, signed: bool, modality: str = "CT") -> bytes:
    """A minimal but real single-frame DICOM file around ``pixels`` (H, W) int16/uint16."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = "Phantom^Test", "HPAC-0001", modality
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.add_new(0x00091010, "LO", "private tag kept")
    ds.PixelData = pixels.astype("<i2" if signed else "<u2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _ct(h: int, w: int) -> np.ndarray:
    return smooth_image(h, w, 1, dtype=np.int16)[:, :, 0]  # signed 12-bit, like CT storage


def _unsigned(h: int, w: int, bits: int) -> np.ndarray:
    """(h, w) uint16 using ``bits`` bits (smooth_image gives 12)."""
    base = smooth_image(h, w, 1, dtype=np.uint16)[:, :, 0].astype(np.int64)
    return (base << bits >> 12 if bits >= 12 else base >> (12 - bits)).astype(np.uint16)


def _same_dataset(a: bytes, b: bytes) -> None:
    da, db = pydicom.dcmread(io.BytesIO(a)), pydicom.dcmread(io.BytesIO(b))
    assert np.array_equal(da.pixel_array, db.pixel_array)
    assert da.pixel_array.dtype == db.pixel_array.dtype
    del da.PixelData, db.PixelData
    assert da == db
    assert da.file_meta == db.file_meta


@pytest.mark.parametrize("signed,bits", [(True, 12), (False, 10), (False, 16)])
def test_dicom_roundtrip_api(signed, bits, tiny_models):
    pix = _ct(19, 27) if signed else _unsigned(19, 27, bits)
    src = make_dicom(pix, bits, signed)
    img = read_image(src)
    assert img.pixels.dtype == (np.int16 if signed else np.uint16)
    assert img.bits <= bits + (0 if not signed else 1)
    assert img.metadata_kind == fileformat.METADATA_DICOM and b"Phantom" in img.metadata
    data = codec.encode(img, {1: tiny_models[1]})
    back = codec.decode_image(data, [tiny_models[1]])
    assert np.array_equal(back.pixels, img.pixels)
    _same_dataset(src, dicom.write_dicom(back.pixels, back.metadata))


def test_dicom_roundtrip_cli(tmp_path):
    src = tmp_path / "scan.dcm"
    src.write_bytes(make_dicom(_ct(33, 21), 12, True))
    run = lambda *a: subprocess.run([sys.executable, "-m", "hpac", *map(str, a)], capture_output=True, timeout=600)
    r = run("encode", src, tmp_path / "scan.hpac")
    assert r.returncode == 0, r.stderr
    info = run("info", tmp_path / "scan.hpac")
    assert b"DICOM header" in info.stdout
    (tmp_path / "out").mkdir()
    r = run("decode", tmp_path / "scan.hpac", tmp_path / "out" / "scan.dcm")
    assert r.returncode == 0, r.stderr
    _same_dataset(src.read_bytes(), (tmp_path / "out" / "scan.dcm").read_bytes())
    r = run("decode", tmp_path / "scan.hpac")  # default output scan.dcm exists: refused, not overwritten
    assert r.returncode != 0 and b"--force" in r.stderr
    r = run("decode", tmp_path / "scan.hpac", "--force")
    assert r.returncode == 0, r.stderr
    _same_dataset(src.read_bytes(), (tmp_path / "scan.dcm").read_bytes())


def test_dicom_header_is_counted_and_required_for_dcm(tmp_path, tiny_models):
    img = read_image(make_dicom(_ct(9, 11), 12, True))
    data = codec.encode(img, {1: tiny_models[1]})
    header, _ = container.read(data)
    assert header.metadata == img.metadata and len(data) > len(img.metadata)
    plain = hpac.encode(img.pixels, model=tiny_models[1])
    with pytest.raises(hpac.HpacError, match="no DICOM header"):
        hpac.decode_file(_write(tmp_path / "p.hpac", plain), tmp_path / "p.dcm", model=tiny_models[1])


def test_unsupported_dicom_is_refused():
    pix = _ct(4, 5)
    raw = bytearray(make_dicom(pix, 12, True))
    ds = pydicom.dcmread(io.BytesIO(bytes(raw)))
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(hpac.UnsupportedImageError, match="multi-frame"):
        read_image(buf.getvalue())
    with pytest.raises(hpac.HpacError):
        read_image(bytes(raw[:200]))  # truncated: DICM magic, no dataset


def test_dicom_too_big_for_the_format_is_refused_before_its_pixels():
    """Rows and Columns are checked before pydicom decodes anything: compressed pixel data
    can declare any size."""
    ds = pydicom.dcmread(io.BytesIO(make_dicom(_ct(4, 5), 12, True)))
    ds.Rows = ds.Columns = (1 << 14) + 1
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(hpac.UnsupportedImageError, match="exceeds the format limit"):
        read_image(buf.getvalue())


def _write(path, data):
    path.write_bytes(data)
    return path


def _encapsulated(frame: bytes, syntax, rows: int, columns: int, samples: int = 1) -> bytes:
    """A single-frame DICOM file holding one compressed frame, its size taken from the caller."""
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((rows, columns), np.uint16), 8, False)))
    ds.file_meta.TransferSyntaxUID = syntax
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.SamplesPerPixel = 8, 8, 7, samples
    if samples == 3:
        ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_compressed_frames_declaring_another_size_are_refused_before_decoding():
    """The decoder behind pydicom allocates what the codestream declares, and pydicom compares
    it with Rows and Columns only afterwards: a 1.2 KB DICOM of 8 x 8 pixels whose JPEG 2000
    frame declared 12000 x 12000 took 913 MB to be refused."""
    import struct

    from PIL import Image as PILImage
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit

    gray = PILImage.fromarray(smooth_image(8, 8, 1)[:, :, 0])
    for fmt, syntax, opts in (("JPEG2000", JPEG2000Lossless, {"irreversible": False, "no_jp2": True}), ("JPEG", JPEGBaseline8Bit, {})):
        buf = io.BytesIO()
        gray.save(buf, fmt, **opts)
        frame = buf.getvalue()
        assert dicom.codestream_size(frame) == (8, 8, 1)
        if fmt == "JPEG2000":  # the same codestream in a JP2 file's jp2c box
            jp2 = io.BytesIO()
            gray.save(jp2, fmt, irreversible=False)
            assert jp2.getvalue()[4:8] == b"jP  " and dicom.codestream_size(jp2.getvalue()) == (8, 8, 1)
        assert read_image(_encapsulated(frame, syntax, 8, 8)).pixels.shape == (8, 8, 1)  # the honest file decodes
        if fmt == "JPEG2000":  # a raw codestream; SIZ: Xsiz and Ysiz after SOC, SIZ, Lsiz and Rsiz
            assert frame[:4] == b"\xff\x4f\xff\x51"
            big = frame[:8] + struct.pack(">II", 12000, 12000) + frame[16:]
        else:  # baseline start of frame: length, precision, then height and width
            sof = frame.index(b"\xff\xc0")
            big = frame[: sof + 5] + struct.pack(">HH", 12000, 12000) + frame[sof + 9 :]
        assert dicom.codestream_size(big) == (12000, 12000, 1)
        with pytest.raises(hpac.UnsupportedImageError, match="declares 12000x12000 pixels"):
            read_image(_encapsulated(big, syntax, 8, 8))


def test_malformed_dicom_elements_are_refused_cleanly():
    """pydicom converts elements lazily, so malformed values raise where they are first read
    (ValueError, TypeError, ...); each must reach the user as one clear error."""
    from pydicom.data import get_testdata_file

    bad_vr = get_testdata_file("badVR.dcm")  # NumberOfFrames "1A"
    with pytest.raises(hpac.UnsupportedImageError, match="cannot read DICOM file"):
        read_image(open(bad_vr, "rb").read())
    src = make_dicom(_ct(4, 5), 12, True)
    assert ExplicitVRLittleEndian.encode() in src
    wrong = src.replace(ExplicitVRLittleEndian.encode(), b"1.2.840.10008.5.1.4", 1)  # a UID, not a transfer syntax
    with pytest.raises(hpac.UnsupportedImageError, match="cannot read DICOM file"):
        read_image(wrong)


def test_dicom_encoded_in_another_vr_than_its_syntax_round_trips(tiny_models):
    """pydicom's SC_rgb_jpeg.dcm declares explicit VR but is implicit: pydicom reads it with
    a warning, and writing its header back raised TypeError (a traceback from hpac encode)."""
    from pydicom.data import get_testdata_file

    src = open(get_testdata_file("SC_rgb_jpeg.dcm"), "rb").read()
    with pytest.warns(UserWarning, match="implicit VR"):
        img = read_image(src)
    data = codec.encode(img, {3: tiny_models[3]})
    back = codec.decode_image(data, [tiny_models[3]])
    assert np.array_equal(back.pixels, img.pixels)
    out = pydicom.dcmread(io.BytesIO(dicom.write_dicom(back.pixels, back.metadata)))
    with pytest.warns(UserWarning):
        expected = pydicom.dcmread(io.BytesIO(src)).pixel_array
    assert np.array_equal(out.pixel_array, expected)
    assert out.ImageType == ["DERIVED", "SECONDARY", "OTHER"]


def test_nested_sequences_cannot_blow_up_error_messages():
    """An atheris find: 2.7 KB whose file meta nests sequences 15 deep around an element of
    the wrong length. pydicom wraps the error once per level, each message holding the
    traceback text of the one inside, so the text doubled per level: 11 s and 3.7 GB, then
    the error. hpac now reads it in a fraction of a second with pydicom's wrapper replaced,
    and puts pydicom's back afterwards."""
    import base64
    import resource
    import zlib

    import pydicom.dataset

    data = zlib.decompress(base64.b64decode(
        "eNrz9NRieMXKwYAGfjLQCbh4OvsyAengwFAfFoZzROhQoaJZIxdQIax+Dtc4Hk2To2lysMbxaBgNWff+////72i+HaH5ll5AnJGFgRHMYgLS"
        "/suwgyHkVJxADKT9P0Q7klmQpiwAJv91fQ=="))
    pydicoms = pydicom.dataset.tag_in_exception
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(hpac.UnsupportedImageError, match="cannot read DICOM file: Expected total bytes") as err:
        read_image(data)
    assert len(str(err.value)) < 400
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB; was 3.7 GB
    assert pydicom.dataset.tag_in_exception is pydicoms


def test_stored_values_come_back_in_their_colour_space_and_byte_order(tiny_models):
    """Native YCbCr was converted to RGB (a rounding step) and then labelled YCbCr again, and
    big-endian pixel data was written little-endian under a big-endian header: both gave a
    .dcm whose pixels differ from the original's."""
    from pydicom.data import get_testdata_file

    def round_trip(src: bytes) -> bytes:
        img = read_image(src)
        back = codec.decode_image(codec.encode(img, tiny_models), list(tiny_models.values()))
        return dicom.write_dicom(back.pixels, back.metadata)

    ds = pydicom.dcmread(get_testdata_file("SC_rgb_small_odd.dcm"))
    ds.PhotometricInterpretation = "YBR_FULL"  # the same bytes, declared YCbCr
    buf = io.BytesIO()
    ds.save_as(buf)
    ybr = buf.getvalue()
    stored = np.frombuffer(ds.PixelData, np.uint8)[: 3 * 3 * 3].reshape(3, 3, 3)
    assert np.array_equal(read_image(ybr).pixels, stored)  # coded as stored, not as RGB
    _same_dataset(ybr, round_trip(ybr))
    for name in ("MR_small_bigendian.dcm", "SC_ybr_full_422_uncompressed.dcm"):
        src = open(get_testdata_file(name), "rb").read()
        out = pydicom.dcmread(io.BytesIO(round_trip(src)))
        original = pydicom.dcmread(io.BytesIO(src))
        assert np.array_equal(out.pixel_array, original.pixel_array), name
        assert out.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert out.PhotometricInterpretation == "YBR_FULL"  # 4:2:2 chroma upsampled by pydicom, values kept
