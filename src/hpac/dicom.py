"""DICOM files <-> :class:`hpac.imageio.Image`: the stored integers exactly, plus the header.

A DICOM file is kept as two parts:

* its *stored* pixel values (before any rescale or LUT), coded like any other image; the
  significant bit depth is detected from the values (12-bit CT in 16-bit words codes as 12);
* every other element (file meta, patient/study/series/equipment data, Bits Stored, High Bit,
  Pixel Representation, Rescale Slope/Intercept, private tags...), serialised as a DICOM
  Part-10 stream without Pixel Data, in the container's metadata section (counted in the
  file size).

``hpac decode x.hpac out.dcm`` puts them back together. For an uncompressed original every
element and every pixel comes back as it was. For a compressed original (JPEG, JPEG-LS,
JPEG 2000, RLE; decoding needs pydicom's pixel handlers installed) the pixel values are kept
exactly but the output is written uncompressed: Transfer Syntax becomes Explicit VR Little
Endian, and a YCbCr colour original becomes RGB with Planar Configuration 0.

Needs the optional extra ``hpac[dicom]`` (pydicom); single-frame images, 1 or 3 samples per
pixel, 8- or 16-bit allocation.
"""
from __future__ import annotations

import io

import numpy as np

from .errors import UnsupportedImageError

METADATA_KIND = 1  # container metadata kind of a DICOM dataset without Pixel Data


def is_dicom(data: bytes) -> bool:
    """Part-10 files carry "DICM" after a 128-byte preamble."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise UnsupportedImageError("DICOM input needs pydicom: pip install 'hpac[dicom]'") from None
    return pydicom


def read_dicom(data: bytes) -> tuple[np.ndarray, bytes]:
    """DICOM bytes -> stored pixels (H, W[, 3]) uint8/uint16/int16 and the header bytes."""
    pydicom = _pydicom()
    from pydicom.uid import ExplicitVRLittleEndian

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # pydicom raises many types on malformed files
        raise UnsupportedImageError(f"cannot parse DICOM file: {exc}") from None
    if "PixelData" not in ds:
        raise UnsupportedImageError("DICOM file has no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp, alloc = int(ds.get("SamplesPerPixel", 1)), int(ds.get("BitsAllocated", 0))
    if frames != 1:
        raise UnsupportedImageError(f"multi-frame DICOM ({frames} frames) is not supported")
    if spp not in (1, 3) or alloc not in (8, 16):
        raise UnsupportedImageError(f"DICOM with {spp} samples per pixel and {alloc} allocated bits is not supported")
    from .imageio import check_size

    check_size(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))  # compressed data can declare anything
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise UnsupportedImageError(f"cannot decode DICOM pixel data ({syntax.name}): {exc}") from None
    if arr.dtype == np.int8:
        raise UnsupportedImageError("signed 8-bit DICOM pixel data is not supported")
    arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("=")))
    del ds.PixelData
    if syntax.is_compressed:  # written back uncompressed: the values are the same, the encoding is not
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if spp == 3:
            if str(ds.get("PhotometricInterpretation", "")).startswith("YBR"):
                ds.PhotometricInterpretation = "RGB"  # pixel_array converted the colour space
            ds.PlanarConfiguration = 0
    buf = io.BytesIO()
    ds.save_as(buf)
    return arr, buf.getvalue()


def write_dicom(pixels: np.ndarray, header: bytes) -> bytes:
    """Stored pixels (H, W, C) and header bytes from :func:`read_dicom` -> DICOM file bytes."""
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(io.BytesIO(header), force=True)
    except Exception as exc:
        raise UnsupportedImageError(f"stored DICOM header is unreadable: {exc}") from None
    arr = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    if pixels.shape[2] == 3 and int(ds.get("PlanarConfiguration", 0)) == 1:
        arr = arr.transpose(2, 0, 1)
    raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
    ds.PixelData = raw + (b"\0" if len(raw) % 2 else b"")
    ds["PixelData"].VR = "OW" if pixels.dtype.itemsize == 2 else "OB"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()
