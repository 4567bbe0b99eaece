"""Metadata kept beside the pixels (hpac.io.metadata): PNG -> .hpac -> PNG, TIFF -> .hpac -> TIFF,
across the two, through the Pillow plugin, and refused cleanly when a file's record set is bad.

The profiles, EXIF and XMP blocks are real ones (tests/data/metadata/SOURCES.md); the PNG and
TIFF inputs are written by Pillow, a writer independent of hpac's, and checked with Pillow's
reader as well as hpac's.
"""
from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import hpac
from hpac import codec, container, fileformat
from hpac.io import metadata as M
from hpac.errors import FormatError, UnsupportedImageError
from hpac.io.readers import read_image
from hpac.io import writers

DATA = Path(__file__).parent / "data" / "metadata"
CAMERA_ICC = (DATA / "canon_eos_rebel_t6.icc").read_bytes()  # Adobe RGB (1998), as a camera embeds it
PROPHOTO_ICC = (DATA / "ProPhotoRGB.icc").read_bytes()
EOS_EXIF = (DATA / "canon_eos_rebel_t6.exif").read_bytes()
S40_EXIF = (DATA / "canon_powershot_s40.exif").read_bytes()
XMP = (DATA / "canon_eos_rebel_t6.xmp").read_bytes()
# raw bodies of PNG colour chunks: sRGB perceptual; gamma 1/2.2; the sRGB primaries; 5 significant bits
COLOUR = [(b"sRGB", b"\x00"), (b"gAMA", struct.pack(">I", 45455)),
          (b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)),
          (b"sBIT", b"\x05\x05\x05")]


def _pixels(shape, dtype=np.uint8, seed=0) -> np.ndarray:
    hi = 256 if dtype == np.uint8 else 65536
    return np.random.default_rng(seed).integers(0, hi, shape).astype(dtype)


def _through_hpac(src: bytes, out_name: str, **kw) -> bytes:
    """An image file's bytes -> .hpac -> the bytes of ``out_name``'s format."""
    data = hpac.encode(read_image(src, **kw), threads=1)
    return writers.image_file_bytes(codec.decode_image(data, threads=1), out_name)


def _png_with_everything(pixels: np.ndarray, icc: bytes | None = CAMERA_ICC) -> bytes:
    """Pillow's PNG of ``pixels`` with every kind of metadata (Pillow drops sRGB beside a profile)."""
    info = PngImagePlugin.PngInfo()
    for kind, body in COLOUR:
        info.add(kind, body)
    info.add_text("Title", "Blinds at dusk")
    info.add_text("Comment", "a longer comment, compressed " * 8, zip=True)
    info.add_itxt("Author", "Zoë Ångström")  # needs UTF-8: iTXt
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", icc_profile=icc, exif=EOS_EXIF, pnginfo=info, dpi=(300, 300))
    return buf.getvalue()


def test_png_round_trip_keeps_every_block_byte_for_byte():
    pixels = _pixels((24, 32, 3))
    src = _png_with_everything(pixels)
    out = _through_hpac(src, "x.png")
    before, after = M.from_png(src), M.from_png(out)
    assert after == before
    assert before.icc == CAMERA_ICC and before.exif == EOS_EXIF and before.xmp == XMP
    assert sorted(k for k, _ in before.png_chunks) == sorted([b"gAMA", b"cHRM", b"sBIT", b"tEXt", b"zTXt", b"iTXt"])
    assert all(dict(before.png_chunks)[k] == body for k, body in COLOUR[1:])
    with Image.open(io.BytesIO(out)) as im:  # Pillow's reader agrees
        assert np.array_equal(np.asarray(im), pixels)
        assert im.info["icc_profile"] == CAMERA_ICC
        assert im.info["exif"].removeprefix(b"Exif\x00\x00") == EOS_EXIF
        assert im.info["xmp"] == XMP
        assert im.info["Title"] == "Blinds at dusk" and im.info["Author"] == "Zoë Ångström"
        assert im.info["gamma"] == pytest.approx(0.45455)
        assert im.getexif()[272] == "Canon EOS Rebel T6"
        src_dpi = Image.open(io.BytesIO(src)).info["dpi"]
        assert im.info["dpi"] == src_dpi


@pytest.mark.parametrize("mode", ["RGB", "I;16"])
def test_tiff_round_trip_keeps_profile_exif_xmp_resolution(tmp_path, mode):
    pixels = _pixels((20, 30, 3)) if mode == "RGB" else _pixels((20, 30), np.uint16, seed=1)
    tags = Image.Exif()
    tags.load(S40_EXIF)
    tags.get_ifd(0x8769).pop(0xA005)  # Pillow's TIFF writer would copy this sub-IFD offset unchanged
    tags[700] = XMP  # Pillow writes the exif= tags into the TIFF's IFD (tiffinfo= would replace them)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "TIFF", icc_profile=PROPHOTO_ICC, exif=tags, dpi=(240, 240))
    src = buf.getvalue()
    (tmp_path / "in.tif").write_bytes(src)
    hpac.encode_file(tmp_path / "in.tif", tmp_path / "in.hpac", threads=1)
    hpac.decode_file(tmp_path / "in.hpac", tmp_path / "out.tif", threads=1)
    out = (tmp_path / "out.tif").read_bytes()
    before, after = M.from_tiff(src), M.from_tiff(out)
    assert after == before  # the EXIF block byte for byte, as hpac builds it from the IFDs
    assert before.icc == PROPHOTO_ICC and before.xmp == XMP and before.resolution == (240, 1, 240, 1, 2)
    with Image.open(io.BytesIO(src)) as a, Image.open(io.BytesIO(out)) as b:
        assert np.array_equal(np.asarray(b), pixels)
        assert b.info["icc_profile"] == PROPHOTO_ICC and b.info["dpi"] == (240, 240)
        ea, eb = a.getexif(), b.getexif()
        assert eb[272] == "Canon PowerShot S40" and eb[306] == ea[306]
        ifd_a, ifd_b = ea.get_ifd(0x8769), eb.get_ifd(0x8769)
        assert len(ifd_a) > 20
        assert repr(sorted((k, v) for k, v in ifd_a.items() if k != 0xA005)) == repr(
            sorted((k, v) for k, v in ifd_b.items() if k != 0xA005))


def test_exif_sub_ifds_move_into_tiff():
    """The EXIF block's interoperability IFD (an offset inside the EXIF IFD) lands in the TIFF intact."""
    camera = Image.Exif()
    camera.load(S40_EXIF)
    interop = camera.get_ifd(0xA005)
    assert interop  # R98 index, version
    buf = io.BytesIO()
    Image.fromarray(_pixels((8, 8, 3))).save(buf, "PNG", exif=S40_EXIF)
    with Image.open(io.BytesIO(_through_hpac(buf.getvalue(), "x.tif"))) as im:
        assert im.getexif().get_ifd(0xA005) == interop
        assert im.getexif()[271] == "Canon"


def test_png_srgb_chunk_survives():
    src = _png_with_everything(_pixels((8, 8, 3)), icc=None)
    out = _through_hpac(src, "x.png")
    assert dict(M.from_png(out).png_chunks)[b"sRGB"] == b"\x00"
    assert M.from_png(out) == M.from_png(src)


def test_png_to_tiff_and_back_carries_profile_exif_xmp():
    pixels = _pixels((16, 16, 3))
    tiff = _through_hpac(_png_with_everything(pixels), "x.tif")
    meta = M.from_tiff(tiff)
    assert meta.icc == CAMERA_ICC and meta.xmp == XMP and meta.resolution == (11811, 100, 11811, 100, 3)
    with Image.open(io.BytesIO(tiff)) as im:
        assert np.array_equal(np.asarray(im), pixels)
        assert im.getexif()[272] == "Canon EOS Rebel T6"
        camera = Image.Exif()
        camera.load(EOS_EXIF)
        got, want = im.getexif().get_ifd(0x8769), camera.get_ifd(0x8769)  # exposure, dates, lens...
        assert repr(sorted(got.items())) == repr(sorted(want.items()))  # repr: the lens's unknown NaNs match
    png = _through_hpac(tiff, "y.png")
    back = M.from_png(png)
    assert back.icc == CAMERA_ICC and back.xmp == XMP and back.resolution == meta.resolution
    assert back.exif == meta.exif


def test_strip_drops_metadata_and_keeps_pixels(tmp_path):
    pixels = _pixels((12, 12, 3))
    (tmp_path / "in.png").write_bytes(_png_with_everything(pixels))
    hpac.encode_file(tmp_path / "in.png", tmp_path / "kept.hpac", threads=1)
    hpac.encode_file(tmp_path / "in.png", tmp_path / "bare.hpac", threads=1, strip=True)
    kept, bare = (tmp_path / "kept.hpac").read_bytes(), (tmp_path / "bare.hpac").read_bytes()
    assert set(hpac.read_info(kept)) >= {"icc_profile", "exif", "xmp", "dpi", "Title"}
    assert hpac.read_info(bare) == {}
    assert np.array_equal(hpac.decode(bare), hpac.decode(kept))
    cli = [sys.executable, "-m", "hpac"]
    r = subprocess.run(cli + ["encode", "--strip", "-q", "--threads", "1", str(tmp_path / "in.png"),
                              str(tmp_path / "cli.hpac")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cli.hpac").read_bytes() == bare
    info = subprocess.run(cli + ["info", str(tmp_path / "kept.hpac")], capture_output=True, text=True).stdout
    assert "ICC profile, 560 bytes" in info and "Canon EOS Rebel T6" in info and "PNG tEXt" in info
    assert "\nmetadata:" not in subprocess.run(cli + ["info", str(tmp_path / "cli.hpac")], capture_output=True,
                                            text=True).stdout


def test_pillow_plugin_carries_metadata():
    import hpac.integrations.pillow  # noqa: F401 - registers the format

    pixels = _pixels((10, 14, 3))
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "HPAC", icc_profile=PROPHOTO_ICC, exif=S40_EXIF, xmp=XMP, dpi=(72, 72),
                                 threads=1)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        assert im.info["icc_profile"] == PROPHOTO_ICC
        assert im.info["exif"] == b"Exif\x00\x00" + S40_EXIF
        assert im.info["xmp"] == XMP and im.info["dpi"] == (72, 72)
        assert np.array_equal(np.asarray(im), pixels)
        again = io.BytesIO()
        im.save(again, "HPAC", threads=1)  # opened metadata is saved again
    assert hpac.read_info(again.getvalue())["icc_profile"] == PROPHOTO_ICC


def _file_with_metadata(records: bytes) -> bytes:
    """A valid .hpac file whose metadata section is ``records`` (CRCs recomputed)."""
    data = hpac.encode(np.zeros((8, 8), np.uint8), threads=1)
    header, payload = container.read(data)
    header = container.Header(header.height, header.width, header.channels, header.dtype, header.bits,
                              header.pixel_sha256, header.planes, fileformat.METADATA_IMAGE, records, header.floored_tables)
    return container.write(header, [bytes(payload)])


@pytest.mark.parametrize("records, message", [
    (b"not zlib at all", "does not decompress"),
    (zlib.compress(bytes(M.MAX_BYTES + 1)), "expands past"),
    (zlib.compress(b"\x09\x01\x00\x00\x00x"), "unknown record 9"),
    (zlib.compress(b"\x01\xff\x00\x00\x00abc"), "truncated"),
    (zlib.compress(b"\x04\x05\x00\x00\x00IDATx"), "unknown PNG chunk"),
    (zlib.compress(b"\x05\x14\x00\x00\x00" + bytes(20)), "invalid resolution"),
    (zlib.compress(b"abc")[:-3], "truncated"),
])
def test_bad_metadata_section_is_a_clean_error(tmp_path, records, message):
    data = _file_with_metadata(records)
    with pytest.raises(FormatError, match=message):
        hpac.decode(data)
    (tmp_path / "bad.hpac").write_bytes(data)
    r = subprocess.run([sys.executable, "-m", "hpac", "decode", str(tmp_path / "bad.hpac"),
                        str(tmp_path / "out.png")], capture_output=True, text=True)
    assert r.returncode == FormatError.exit_code and "Traceback" not in r.stderr
    assert not (tmp_path / "out.png").exists()


def test_record_set_round_trips_and_is_compressed():
    meta = M.ImageMetadata(CAMERA_ICC, EOS_EXIF, XMP, tuple(COLOUR), (72, 1, 72, 1, 2))
    blob = meta.to_bytes()
    assert M.from_bytes(blob) == meta
    assert len(blob) < len(CAMERA_ICC) + len(EOS_EXIF) + len(XMP)
    assert not M.ImageMetadata() and M.from_bytes(M.ImageMetadata().to_bytes()) == M.ImageMetadata()


def test_broken_icc_chunk_in_input_is_refused_cleanly():
    png = _png_with_everything(_pixels((8, 8, 3)))
    start = png.index(b"iCCP") - 4
    n = struct.unpack(">I", png[start : start + 4])[0]
    body = b"ICC profile\x00\x00" + b"\x78\x9c garbage"
    broken = png[:start] + struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(
        ">I", zlib.crc32(b"iCCP" + body)) + png[start + 12 + n :]
    with pytest.raises(UnsupportedImageError, match="ICC profile"):
        read_image(broken)
    assert read_image(broken, metadata=False).metadata == b""


def test_a_malformed_tiff_resolution_keeps_no_resolution():
    """A fuzz find: an XResolution that is not a rational raised AttributeError."""
    from PIL import TiffImagePlugin, TiffTags

    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    for tag in (282, 283):
        ifd.tagtype[tag] = TiffTags.ASCII
        ifd[tag] = "seventy-two"
    buf = io.BytesIO()
    Image.fromarray(_pixels((4, 4, 3))).save(buf, "TIFF", tiffinfo=ifd)
    assert M.from_tiff(buf.getvalue()).resolution is None
    assert np.array_equal(read_image(buf.getvalue()).pixels, _pixels((4, 4, 3)))
    assert M.from_pillow_info({"dpi": (1e12, 3)}).resolution is None  # past the record's u32
