"""DICOM files <-> :class:`hpac.io.image.Image`: the stored integers exactly, plus the header.

A DICOM file is kept as two parts:

* its *stored* pixel values (before any rescale or LUT), coded like any other image; the
  significant bit depth is detected from the values (12-bit CT in 16-bit words codes as 12);
* every other element (file meta, patient/study/series/equipment data, Bits Stored, High Bit,
  Pixel Representation, Rescale Slope/Intercept, private tags...), serialised as a DICOM
  Part-10 stream without Pixel Data, in the container's metadata section (counted in the
  file size).

``hpac decode x.hpac out.dcm`` puts them back together. For an uncompressed original every
element and every stored value comes back as it was, in its byte order, YCbCr included
(YBR_FULL_422 comes back as YBR_FULL: pydicom gives each pair's chroma value to both pixels).
For a compressed original (JPEG, JPEG-LS, JPEG 2000, RLE; decoding needs pydicom's pixel
handlers installed) the decoded values are kept exactly but the output is written
uncompressed: Transfer Syntax becomes Explicit VR Little Endian, and a YCbCr original coded
with a JPEG codec becomes the RGB that the codec decodes, with Planar Configuration 0.

Needs the optional extra ``hpac[dicom]`` (pydicom 3); single-frame images, 1 or 3 samples per
pixel, 8- or 16-bit allocation. A compressed frame must declare in its own header the size that
Rows and Columns give: that is checked before any pixel is decoded.
"""
from __future__ import annotations

import contextlib
import io
import struct
import threading

import numpy as np

from ..errors import HpacError, UnsupportedImageError
from .image import check_size

# start-of-frame markers of JPEG (baseline, extended, progressive, lossless) and JPEG-LS (0xF7):
# each is followed by its length, the sample precision, the height, the width and the components
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})


def is_dicom(data: bytes) -> bool:
    """Part-10 files carry "DICM" after a 128-byte preamble."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise UnsupportedImageError("DICOM input needs pydicom: pip install 'hpac[dicom]'") from None
    return pydicom


_patch_lock = threading.Lock()
_patch_users = 0
_pydicoms_tag_in_exception = None


@contextlib.contextmanager
def _short_tag_errors():
    """pydicom wraps an error in each sequence level around it, and each wrapper's message
    holds the traceback text of the one inside, so the text doubles with every level: a
    2.7 KB file whose sequences nest 15 deep took 3.7 GB. While hpac reads or writes DICOM,
    a wrapper adds only the tag. Shared by threads: the first one in installs it, the last
    one out puts pydicom's back."""
    import pydicom.dataset
    import pydicom.filewriter

    global _patch_users, _pydicoms_tag_in_exception
    with _patch_lock:
        if _patch_users == 0:
            _pydicoms_tag_in_exception = pydicom.dataset.tag_in_exception
            pydicom.dataset.tag_in_exception = pydicom.filewriter.tag_in_exception = _tag_in_exception
        _patch_users += 1
    try:
        yield
    finally:
        with _patch_lock:
            _patch_users -= 1
            if _patch_users == 0:
                pydicom.dataset.tag_in_exception = pydicom.filewriter.tag_in_exception = _pydicoms_tag_in_exception


@contextlib.contextmanager
def _tag_in_exception(tag):
    try:
        yield
    except Exception as exc:
        raise type(exc)(f"with tag {tag}: {exc}") from exc


def _failed(what: str, exc: BaseException) -> UnsupportedImageError:
    """One line for the user: the innermost error of a chain that pydicom wrapped per level."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc)
    return UnsupportedImageError(f"{what}: {text[:300]}{' ...' if len(text) > 300 else ''}")


def read_dicom(data: bytes) -> tuple[np.ndarray, bytes]:
    """DICOM bytes -> stored pixels (H, W[, 3]) uint8/uint16/int16 and the header bytes."""
    pydicom = _pydicom()
    try:
        with _short_tag_errors():
            return _read_dicom(pydicom, data)
    except HpacError:
        raise
    except Exception as exc:  # pydicom converts elements lazily and raises many types on malformed ones
        raise _failed("cannot read DICOM file", exc) from None


def _read_dicom(pydicom, data: bytes) -> tuple[np.ndarray, bytes]:
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless

    ds = pydicom.dcmread(io.BytesIO(data))
    if "PixelData" not in ds:
        raise UnsupportedImageError("DICOM file has no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp, alloc = int(ds.get("SamplesPerPixel", 1)), int(ds.get("BitsAllocated", 0))
    if frames != 1:
        raise UnsupportedImageError(f"multi-frame DICOM ({frames} frames) is not supported")
    if spp not in (1, 3) or alloc not in (8, 16):
        raise UnsupportedImageError(f"DICOM with {spp} samples per pixel and {alloc} allocated bits is not supported")

    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    check_size(rows, columns)
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is None:
        raise UnsupportedImageError("DICOM file names no transfer syntax")
    lossy_colour = syntax.is_compressed and syntax != RLELossless
    if syntax.is_compressed:  # the codestream's own header sizes what the decoder allocates
        _check_frame_header(ds, rows, columns)
    # Stored values exactly (no YCbCr -> RGB, a rounding step) wherever they are stored as
    # such: native and RLE data. A JPEG codec decodes colour to RGB itself.
    ds.pixel_array_options(raw=not lossy_colour)
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise UnsupportedImageError(f"cannot decode DICOM pixel data ({syntax.name}): {exc}") from None
    if arr.dtype == np.int8:
        raise UnsupportedImageError("signed 8-bit DICOM pixel data is not supported")
    arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("=")))
    del ds.PixelData
    colour = str(ds.get("PhotometricInterpretation", ""))
    if colour == "YBR_FULL_422":  # pydicom upsampled the chroma: each pair's value, twice
        ds.PhotometricInterpretation = "YBR_FULL"
    if syntax.is_compressed:  # written back uncompressed: the values are the same, the encoding is not
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if spp == 3:
            if lossy_colour and colour.startswith("YBR"):
                ds.PhotometricInterpretation = "RGB"  # the JPEG codec converted the colour space
            ds.PlanarConfiguration = 0
    return arr, _serialise(ds)


def codestream_size(frame: bytes) -> tuple[int, int, int] | None:
    """(height, width, components) that a JPEG, JPEG-LS or JPEG 2000 codestream (raw or in
    a JP2 file) declares in its header; None for anything else (RLE)."""
    if frame[:2] == b"\xff\xd8":  # JPEG family: the segments up to the first start of frame
        i = 2
        while i + 4 <= len(frame) and frame[i] == 0xFF:
            marker = frame[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in _SOF_MARKERS and i + 10 <= len(frame):
                height, width, components = struct.unpack_from(">HHB", frame, i + 5)
                return height, width, components
            i += 2 + struct.unpack_from(">H", frame, i + 2)[0]
        return None
    soc = 0
    if frame[4:8] == b"jP  ":  # a JP2 file: the codestream is the contents of its jp2c box
        while True:
            if soc + 16 > len(frame):
                return None
            size, kind, large = struct.unpack_from(">I4sQ", frame, soc)
            size, header = (large, 16) if size == 1 else (size, 8)
            if kind == b"jp2c":
                soc += header
                break
            if size < header:  # 0: the last box, and not the codestream
                return None
            soc += size
    if frame[soc : soc + 4] != b"\xff\x4f\xff\x51" or soc + 42 > len(frame):  # JPEG 2000: SOC, then SIZ
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">4I", frame, soc + 8)
    (components,) = struct.unpack_from(">H", frame, soc + 40)
    return ysiz - yosiz, xsiz - xosiz, components


def _check_frame_header(ds, rows: int, columns: int) -> None:
    """Refuse a compressed frame whose codestream declares another size than the DICOM
    header: decoders allocate what the codestream says, and pydicom compares only after."""
    from pydicom.encaps import generate_frames

    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    except Exception as exc:
        raise UnsupportedImageError(f"cannot read the encapsulated DICOM pixel data: {exc}") from None
    declared = codestream_size(frame)
    if declared is None:
        return
    if declared[:2] != (rows, columns):
        raise UnsupportedImageError(f"compressed DICOM frame declares {declared[0]}x{declared[1]} pixels; "
                                    f"the DICOM header says {rows}x{columns}")
    if declared[2] > 4:
        raise UnsupportedImageError(f"compressed DICOM frame declares {declared[2]} components")


def write_dicom(pixels: np.ndarray, header: bytes) -> bytes:
    """Stored pixels (H, W, C) and header bytes from :func:`read_dicom` -> DICOM file bytes."""
    pydicom = _pydicom()
    try:
        with _short_tag_errors():
            return _write_dicom(pydicom, pixels, header)
    except HpacError:
        raise
    except Exception as exc:  # a header that pydicom cannot turn back into a file
        raise _failed("stored DICOM header is unusable", exc) from None


def _write_dicom(pydicom, pixels: np.ndarray, header: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(header), force=True)
    arr = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    if pixels.shape[2] == 3 and int(ds.get("PlanarConfiguration", 0)) == 1:
        arr = arr.transpose(2, 0, 1)
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    order = ">" if syntax is not None and syntax.is_transfer_syntax and not syntax.is_little_endian else "<"
    raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder(order)).tobytes()  # the header's byte order
    ds.PixelData = raw + (b"\0" if len(raw) % 2 else b"")
    ds["PixelData"].VR = "OW" if pixels.dtype.itemsize == 2 else "OB"
    return _serialise(ds)


def _serialise(ds) -> bytes:
    """A dataset as Part-10 bytes, written like the original where pydicom can."""
    buf = io.BytesIO()
    try:
        ds.save_as(buf)
        return buf.getvalue()
    except Exception:
        pass
    # A dataset stored in another VR encoding than its transfer syntax says is read with a
    # warning, and its elements keep no VR; converting them gives each its dictionary VR.
    for tag in list(ds.keys()):
        ds[tag]
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()
