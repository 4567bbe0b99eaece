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
from hpac import codec, container, dicom  # noqa: E402
from hpac.imageio import read_image  # noqa: E402
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
    assert img.metadata_kind == dicom.METADATA_KIND and b"Phantom" in img.metadata
    data = codec.encode(img, {1: tiny_models[1]})
    back = codec.decode_image(data, [tiny_models[1]])
    assert np.array_equal(back.pixels, img.pixels)
    _same_dataset(src, dicom.write_dicom(back.pixels, back.metadata))


def test_dicom_roundtrip_cli(tmp_path):
    src = tmp_path / "scan.dcm"
    src.write_bytes(make_dicom(_ct(33, 21), 12, True))
    run = lambda *a: subprocess.run([sys.executable, "-m", "hpac.cli", *map(str, a)], capture_output=True, timeout=600)
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
