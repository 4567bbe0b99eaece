"""Decoded images -> files: PNG (8 or 16 bit), TIFF, PGM/PPM, NPY and DICOM, with the
metadata the file kept; the output formats by suffix; atomic writes.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

from .. import fileformat
from ..errors import HpacError, UnsupportedImageError
from . import dicom, metadata
from .image import Image


def atomic_write(path: str | Path, data: bytes, force: bool = False) -> None:
    """Write ``data`` to ``path`` via a temp file + rename; never leaves a partial file."""
    path = Path(path)
    if path.exists() and not force:
        raise HpacError(f"{path} exists (pass force=True to overwrite)", option="force")
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# Output suffix -> what is written; one table for the CLI, decode_file and batch
OUTPUT_FORMATS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PNM", ".pgm": "PNM", ".pnm": "PNM",
                  ".npy": "NPY", ".dcm": "DICOM", ".dicom": "DICOM"}


def native_suffix(metadata_kind: int, dtype: str) -> str:
    """Where a decoded image goes by default: .dcm for files made from DICOM, .npy for signed
    data (PNG has none), else .png."""
    return ".dcm" if metadata_kind == fileformat.METADATA_DICOM else ".npy" if dtype == "int16" else ".png"


def output_format(name: str | Path) -> str:
    """The format an output file name asks for; an unknown suffix is an error (before any
    decoding), not a PNG under another name."""
    suffix = Path(name).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise HpacError(f"cannot write {suffix or 'a file without a suffix'}: name the output .png, .tif, "
                        ".ppm/.pgm, .npy or .dcm")
    return OUTPUT_FORMATS[suffix]


def image_file_bytes(img: Image, name: str) -> bytes:
    """The bytes of a decoded :class:`hpac.io.image.Image` in the format ``name``'s suffix asks
    for (:data:`OUTPUT_FORMATS`); .dcm needs a stored DICOM header, PNG and PGM/PPM refuse
    signed data."""
    fmt = output_format(name)
    meta = metadata.from_bytes(img.metadata) if img.metadata_kind == fileformat.METADATA_IMAGE else None
    if fmt == "NPY":
        return write_npy(img.pixels)
    if fmt == "DICOM":
        if img.metadata_kind != fileformat.METADATA_DICOM:
            raise HpacError("this file stores no DICOM header; decode to .png, .tif or .npy")
        return dicom.write_dicom(img.pixels, img.metadata)
    if fmt == "TIFF":
        tiff = write_tiff(img.pixels)
        return metadata.into_tiff(tiff, meta) if meta else tiff
    if fmt == "PNM":
        return write_pnm(img.pixels, img.bits)
    png = write_png(img.pixels)
    return metadata.into_png(png, meta) if meta else png


def write_png(pixels: np.ndarray) -> bytes:
    """Encode (H, W, C) uint8/uint16 pixels as PNG bytes (int16 is refused: use .npy)."""
    import imagecodecs

    if pixels.dtype == np.int16:
        raise UnsupportedImageError("signed 16-bit pixels cannot be written as PNG; write .npy instead")
    arr = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    return imagecodecs.png_encode(arr, level=6)


def write_tiff(pixels: np.ndarray) -> bytes:
    """Encode (H, W, C) uint8/uint16/int16 pixels as a deflate-compressed TIFF (gray or RGB,
    a second or fourth channel as unassociated alpha)."""
    import imagecodecs

    channels = pixels.shape[2]
    arr = np.ascontiguousarray(pixels[:, :, 0] if channels == 1 else pixels)
    return imagecodecs.tiff_encode(arr, photometric="rgb" if channels >= 3 else "minisblack", planarconfig="contig",
                                   extrasample=2 if channels in (2, 4) else None, compression="deflate")


def write_pnm(pixels: np.ndarray, bits: int) -> bytes:
    """Encode (H, W, 1|3) uint8/uint16 pixels as binary PGM/PPM; maxval 255 for uint8, else
    2^bits - 1 for the image's significant bits (65535 below 9)."""
    channels = pixels.shape[2]
    if channels not in (1, 3) or pixels.dtype == np.int16:
        raise UnsupportedImageError(f"PGM/PPM hold unsigned gray or RGB; this image has {channels} channel(s) of "
                                    f"{pixels.dtype}: write .png, .tif or .npy instead")
    maxval = 255 if pixels.dtype == np.uint8 else (1 << bits) - 1 if bits > 8 else 65535
    head = b"P%d\n%d %d\n%d\n" % (5 if channels == 1 else 6, pixels.shape[1], pixels.shape[0], maxval)
    return head + pixels.astype(">u2" if maxval > 255 else "u1").tobytes()


def write_npy(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, allow_pickle=False)
    return buf.getvalue()
