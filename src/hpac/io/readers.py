"""Image files <-> integer arrays, at native depth.

Reads PNG, TIFF and lossless JPEG XL (imagecodecs), BMP, GIF (one frame) and lossless WebP (Pillow), PPM/PGM
(its own reader), NPY (numpy) and DICOM (pydicom, see :mod:`hpac.io.dicom`); JPEG only when asked
for its pixels. Every reader checks the declared size before decoding (:func:`hpac.io.image.check_size`).
Writing is :mod:`hpac.io.writers`.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import fileformat
from ..errors import UnsupportedImageError
from . import dicom
from . import metadata as image_metadata
from .classical import JXL_CONTAINER, jxl_header, webp_size
from .image import Image, as_image, check_size

# suffixes of the image files a folder walk picks up (bench, batch, train); DICOM is
# batch's own addition (hpac.tools.batch.ENCODE_SUFFIXES). Reading goes by content, not suffix.
IMAGE_SUFFIXES = {".png", ".ppm", ".pgm", ".tif", ".tiff", ".npy", ".bmp", ".gif", ".webp"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")  # little- and big-endian


JPEG_REFUSED = ("JPEG input: its decoded pixels take several times the JPEG's bytes, and JPEG XL "
                 "recompresses a JPEG file losslessly (cjxl); to code its pixels anyway, ask for them "
                 "(read_image(..., jpeg_pixels=True))")


def read_image(src: str | Path | bytes, jpeg_pixels: bool = False, metadata: bool = True) -> Image:
    """Read an image file (or its bytes) into an :class:`Image`; ``jpeg_pixels``: accept a JPEG
    file as its decoded pixels (refused by default, :data:`JPEG_REFUSED`); ``metadata``: keep
    what the file says besides its pixels (a DICOM header; a PNG's or TIFF's colour profile,
    EXIF, XMP, text and resolution, :mod:`hpac.io.metadata`), False to drop it."""
    data = src if isinstance(src, bytes) else _read_bytes(Path(src))
    if dicom.is_dicom(data):
        arr, header = dicom.read_dicom(data)
        img = as_image(arr)
        return Image(img.pixels, img.bits, fileformat.METADATA_DICOM, header) if metadata else img
    try:
        arr = _decode(data, jpeg_pixels)
    except UnsupportedImageError:
        raise
    except Exception as exc:  # the decoders raise many types; the user needs one message
        raise UnsupportedImageError(f"cannot read image: {exc}") from None
    img = as_image(arr)
    if not metadata:
        return img
    found = image_metadata.from_png(data) if data[:8] == PNG_SIGNATURE \
        else image_metadata.from_tiff(data) if data[:4] in TIFF_SIGNATURES else None
    return Image(img.pixels, img.bits, fileformat.METADATA_IMAGE, found.to_bytes()) if found else img


def _check_png(data: bytes) -> None:
    """Check a PNG's declared size from its header, then decode it once with Pillow, which
    checks every chunk's CRC and the zlib stream, before imagecodecs decodes it at full depth:
    imagecodecs 2026.3 drops a reference to None each time libpng fails on a file, and
    Python 3.11 aborts once None's count reaches zero (a fuzz find: a process that is given
    some thousands of broken PNGs dies)."""
    from PIL import PngImagePlugin

    with PngImagePlugin.PngImageFile(io.BytesIO(data)) as im:  # not Image.open: no 179 Mpx guard
        check_size(im.height, im.width)  # opening reads the chunks up to the pixels, decodes none
        if im.n_frames > 1:  # libpng would hand over the default image alone
            raise UnsupportedImageError(f"animated PNG with {im.n_frames} frames (hpac codes one image)")
        im.load()


def _npy_size(data: bytes) -> tuple[int, int, int]:
    """(height, width, channels) from an NPY header; (0, 0, 1) where unknown (np.load then reports it)."""
    from numpy.lib import format as npy

    f = io.BytesIO(data)
    try:
        read = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}[npy.read_magic(f)]
        shape = read(f)[0]
    except Exception:  # another version, or a bad header
        return 0, 0, 1
    return (shape[0], shape[1], math.prod(shape[2:])) if len(shape) >= 2 else (0, 0, 1)


class _TiffHeader(NamedTuple):
    height: int
    width: int
    samples: int  # per pixel, extra samples (alpha) included
    planar: int  # 1: samples interleaved, 2: one plane per sample
    photometric: int  # 0 min-is-white, 1 min-is-black, 2 RGB, 3 palette
    bits: int  # per sample
    colormap: tuple[int, ...]  # palette files: 3 x 2^bits 16-bit entries, all reds, then greens, then blues
    compression: int


# Photometric interpretations past 3, refused: a PNG (the output) cannot say what their samples mean
_TIFF_PHOTOMETRIC_NAMES = {4: "transparency mask", 5: "CMYK", 6: "YCbCr", 8: "CIELab", 9: "ICCLab", 10: "ITULab",
                           32803: "CFA (raw sensor)", 32844: "LogL", 32845: "LogLuv", 34892: "LinearRaw"}


def _tiff_header(data: bytes) -> _TiffHeader:
    """The first IFD's facts, for the page imagecodecs decodes; every TIFF hpac refuses is
    refused here, before decoding (size, depth, photometric interpretation, more pages).
    Read with Pillow's tag reader alone: its TIFF plugin refuses photometric
    interpretations that libtiff decodes, and such a file may declare any size."""
    try:
        ifd = image_metadata.tiff_ifd(data)  # Pillow's warnings on malformed tags silenced: the checks below decide
        samples, bits = int(ifd.get(277, 1)), max(ifd.get(258, (1,)))
        header = _TiffHeader(int(ifd[257]), int(ifd[256]), samples, int(ifd.get(284, 1)),
                             int(ifd.get(262, 2 if samples >= 3 else 1)), bits, tuple(ifd.get(320, ())),
                             int(ifd.get(259, 1)))
    except Exception as exc:
        raise UnsupportedImageError(f"cannot read the TIFF header: {exc}") from None
    check_size(header.height, header.width, header.samples)
    if bits > 16 or ifd.get(339, (1,))[0] == 3 or int(ifd.get(32997, 1)) > 1:  # wide or float samples, SGI depth
        raise UnsupportedImageError(f"TIFF with {bits}-bit, float or volume samples (hpac codes 8-16-bit integers)")
    if header.photometric > 3 and not (header.photometric == 6 and header.compression == 7):
        # (JPEG-compressed YCbCr is decoded to RGB by libtiff)
        name = _TIFF_PHOTOMETRIC_NAMES.get(header.photometric, f"photometric {header.photometric}")
        raise UnsupportedImageError(f"{name} TIFF (hpac reads gray, RGB and palette TIFF; convert it first)")
    if _tiff_has_more_pages(data, ifd):  # libtiff would hand over the first page alone
        raise UnsupportedImageError("TIFF with more than one page (hpac codes one image; split the pages first)")
    return header


_MAX_TIFF_IFDS = 64  # IFDs looked at after the first: up to 65535 tags each, about 50 ms at most


def _tiff_has_more_pages(data: bytes, first) -> bool:
    """Whether a full-resolution image follows ``first`` (a loaded Pillow IFD) in the IFD
    chain; reduced-resolution copies (thumbnails, previews) and masks are not pages."""
    ifd, seen = first, set()
    while ifd.next and len(seen) < _MAX_TIFF_IFDS:
        if ifd.next in seen or ifd.next >= len(data):
            return False  # a loop or a dangling offset: libtiff stops there too
        seen.add(ifd.next)
        try:
            ifd = image_metadata.tiff_ifd(data, ifd.next)
        except Exception:
            return False
        if not int(ifd.get(254, 0)) & 0b101:  # NewSubfileType: bit 0 reduced resolution, bit 2 mask
            return True
    return False


def _tiff_pixels(arr: np.ndarray, tiff: _TiffHeader) -> np.ndarray:
    """What libtiff decoded, as the image it shows: palette indices through the colormap,
    min-is-white and 1-7-bit gray turned into the min-is-black 8-bit gray a PNG holds
    (each map is one-to-one, so nothing is lost). (H, W) or (H, W, C) in and out."""
    if tiff.photometric == 3:
        entries = np.asarray(tiff.colormap, np.int64)
        if arr.ndim != 2 or entries.size == 0 or entries.size % 3 or arr.dtype.kind not in "bu":
            raise UnsupportedImageError("palette TIFF without one index per pixel and a colormap")
        lut = entries.reshape(3, -1).T
        if int(arr.max()) >= len(lut):
            raise UnsupportedImageError(f"palette TIFF index {int(arr.max())} past its {len(lut)} colours")
        if ((lut & 0xFF) == 0).all() or ((lut & 0xFF) == (lut >> 8)).all():  # 8-bit colours as 16-bit entries
            lut = lut >> 8
        return lut.astype(np.uint8 if lut.max() < 256 else np.uint16)[arr.astype(np.intp)]
    if tiff.photometric > 1:  # RGB, or JPEG YCbCr that libtiff turned into RGB
        return arr
    gray = arr if arr.ndim == 2 else arr[:, :, 0]  # extra samples (alpha) stay as they are
    if gray.dtype == np.bool_:
        gray = (gray != (tiff.photometric == 0)).astype(np.uint8) * np.uint8(255)  # white = 255
    elif tiff.photometric == 0:
        if gray.dtype.kind == "i":
            gray = ~gray  # -1 - v: one-to-one on two's complement
        else:
            flipped = (1 << tiff.bits) - 1 - gray.astype(np.int64)
            if flipped.size and int(flipped.min()) < 0:
                raise UnsupportedImageError(f"min-is-white TIFF sample above its {tiff.bits} bits")
            gray = flipped.astype(gray.dtype)
    if gray.dtype == np.uint8 and 1 < tiff.bits < 8:
        top = (1 << tiff.bits) - 1
        gray = ((gray.astype(np.uint16) * 255 + top // 2) // top).astype(np.uint8)
    if arr.ndim == 2:
        return gray
    out = arr.astype(np.uint8) * np.uint8(255) if arr.dtype == np.bool_ else arr.copy()
    out[:, :, 0] = gray
    return out


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UnsupportedImageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _decode(data: bytes, jpeg_pixels: bool = False) -> np.ndarray:
    """Pixels of an image file, its declared size checked before decoding."""
    if data[:8] == PNG_SIGNATURE:
        import imagecodecs

        _check_png(data)
        arr = imagecodecs.png_decode(data)
    elif data[:4] in TIFF_SIGNATURES:
        import imagecodecs

        tiff = _tiff_header(data)
        arr = imagecodecs.tiff_decode(data)
        if tiff.planar == 2 and tiff.samples > 1 and arr.shape[:1] == (tiff.samples,):  # one plane per sample
            arr = np.moveaxis(arr, 0, -1)
        arr = _tiff_pixels(arr, tiff)
    elif data[:6] == b"\x93NUMPY":
        check_size(*_npy_size(data))
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    elif data[:2] in (b"P5", b"P6", b"P2", b"P3"):
        arr = _decode_pnm(data)
    elif data[:2] == b"BM":
        from PIL import BmpImagePlugin

        arr = _pillow(data, BmpImagePlugin.BmpImageFile, "BMP")
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        from PIL import GifImagePlugin

        arr = _pillow(data, GifImagePlugin.GifImageFile, "GIF")
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        from PIL import WebPImagePlugin

        chunks = _riff_chunks(data)
        if b"ANIM" in chunks:
            raise UnsupportedImageError("animated WebP (hpac codes one image)")
        if b"VP8L" not in chunks:
            raise UnsupportedImageError("lossy WebP input: its pixels are not the original's (hpac codes "
                                        "lossless sources; lossless WebP is read)")
        check_size(*webp_size(data))  # before Pillow's decoder allocates its canvas
        arr = _pillow(data, WebPImagePlugin.WebPImageFile, "WebP")
    elif data[:2] == b"\xff\x0a" or data[:12] == JXL_CONTAINER:
        import imagecodecs

        jxl = jxl_header(data)
        check_size(jxl.height, jxl.width)
        if jxl.animated:
            raise UnsupportedImageError("animated JPEG XL (hpac codes one image)")
        if jxl.xyb:
            raise UnsupportedImageError("lossy JPEG XL input (XYB colours): its pixels are not the original's "
                                        "(hpac codes lossless sources; lossless JPEG XL is read)")
        arr = imagecodecs.jpegxl_decode(data)
    elif data[:3] == b"\xff\xd8\xff":
        if not jpeg_pixels:
            raise UnsupportedImageError(JPEG_REFUSED, option="jpeg_pixels")
        from PIL import JpegImagePlugin

        arr = _pillow(data, JpegImagePlugin.JpegImageFile, "JPEG")
    elif data[:4] == b"HPAC":
        raise UnsupportedImageError("input is already an .hpac file (did you mean decode?)")
    else:
        raise UnsupportedImageError("unknown image format (supported: PNG, TIFF, BMP, GIF, lossless WebP, "
                                    "lossless JPEG XL, PPM/PGM, NPY, DICOM)")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr


def _riff_chunks(data: bytes) -> set[bytes]:
    """The top-level chunk ids of a RIFF file (a WebP: VP8 lossy, VP8L lossless, VP8X, ALPH,
    ANIM, ANMF ...)."""
    ids, pos = set(), 12
    while pos + 8 <= len(data):
        ids.add(data[pos : pos + 4])
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        pos += 8 + size + (size & 1)  # chunks are padded to an even size
    return ids


_PILLOW_MODES = {"1": "L", "L": "L", "LA": "LA", "RGB": "RGB", "RGBA": "RGBA", "I;16": "I;16"}


def _pillow(data: bytes, opener, kind: str) -> np.ndarray:
    """One frame of a file Pillow reads, its size checked before any pixel is decoded (the
    plugin class, not Image.open, so no 179 Mpx guard stands in for hpac's own limit).
    Palette images come back as RGB (RGBA where the palette has a transparent entry)."""
    with opener(io.BytesIO(data)) as im:
        check_size(im.height, im.width)
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            raise UnsupportedImageError(f"animated {kind} with {frames} frames (hpac codes one image)")
        if im.mode == "P":
            mode = "RGBA" if "transparency" in im.info or im.palette.mode == "RGBA" else "RGB"
        elif im.mode in _PILLOW_MODES:
            mode = _PILLOW_MODES[im.mode]
        else:
            raise UnsupportedImageError(f"{kind} in Pillow mode {im.mode} (hpac reads gray, RGB and RGBA)")
        im.load()
        return np.asarray(im if im.mode == mode else im.convert(mode))


_PNM_HEADER_FIELD = re.compile(rb"(?:\s|#[^\r\n]*)+(\d{1,10})")  # whitespace and comments, then a number
_PNM_WHITESPACE = b" \t\n\r\v\f"


def _decode_pnm(data: bytes) -> np.ndarray:
    """Samples of a PGM/PPM (P5, P6 or plain P2, P3) exactly as stored: (H, W) or (H, W, 3),
    uint8 for a maxval below 256, else uint16.
    Not Pillow: it rescales every maxval but 255 (and 65535 in gray) to full range, and
    reads a 16-bit PPM as 8-bit."""
    pos, fields = 2, []
    for _ in range(3):  # width, height, maxval
        m = _PNM_HEADER_FIELD.match(data, pos)
        if m is None:
            raise UnsupportedImageError("cannot read the PNM header")
        fields.append(int(m.group(1)))
        pos = m.end()
    width, height, maxval = fields
    if pos >= len(data) or data[pos] not in _PNM_WHITESPACE:
        raise UnsupportedImageError("cannot read the PNM header")
    if not 0 < maxval < 65536:
        raise UnsupportedImageError(f"PNM maxval {maxval} (must be 1 to 65535)")
    channels = 3 if data[1:2] in (b"3", b"6") else 1
    check_size(height, width)
    count = height * width * channels
    if data[1:2] in (b"5", b"6"):
        dtype = np.dtype(">u2" if maxval > 255 else "u1")
        raster = data[pos + 1:pos + 1 + count * dtype.itemsize]
        if len(raster) < count * dtype.itemsize:
            raise UnsupportedImageError(f"truncated PNM: {len(raster)} of {count * dtype.itemsize} raster bytes")
        arr = np.frombuffer(raster, dtype)
    else:
        arr = _plain_pnm_samples(data[pos + 1:], count)
    if count and int(arr.max()) > maxval:  # checked before the cast below, which would wrap
        raise UnsupportedImageError(f"PNM sample {int(arr.max())} above the file's maxval {maxval}")
    arr = arr.astype(np.uint16 if maxval > 255 else np.uint8, copy=False)
    return arr.reshape((height, width, channels) if channels > 1 else (height, width))


def _plain_pnm_samples(text: bytes, count: int) -> np.ndarray:
    """The first `count` decimal samples of a plain PNM raster, int64 (vectorised: a Python
    loop over tokens takes seconds per megapixel)."""
    text = re.sub(rb"#[^\r\n]*", b" ", text)
    b = np.frombuffer(text, np.uint8)
    digit = (b >= 0x30) & (b <= 0x39)
    edges = np.flatnonzero(np.diff(digit.astype(np.int8), prepend=0, append=0))
    starts, ends = edges[0::2][:count], edges[1::2][:count]
    if len(starts) < count:
        raise UnsupportedImageError(f"truncated PNM: {len(starts)} of {count} samples")
    stop = int(ends[-1]) if count else 0
    if not (digit[:stop] | np.isin(b[:stop], np.frombuffer(_PNM_WHITESPACE, np.uint8))).all():
        raise UnsupportedImageError("plain PNM raster holds something other than decimal samples")
    lengths = ends - starts
    if count and int(lengths.max()) > 10:
        raise UnsupportedImageError("plain PNM sample with more than 10 digits")
    values = np.zeros(count, np.int64)
    for k in range(int(lengths.max()) if count else 0):
        more = lengths > k
        values[more] = values[more] * 10 + (b[starts[more] + k] - 0x30)
    return values


