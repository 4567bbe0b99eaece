"""The image hpac codes: (H, W, C) integer pixels, their significant bits, and what the
container keeps beside them; the checks every reader runs.

Arrays are always (H, W, C) with C in 1..4, dtype uint8, uint16 or int16.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fileformat
from ..errors import UnsupportedImageError

SUPPORTED_DTYPES = ("uint8", "uint16", "int16")


def signed_offset(dtype: np.dtype | str, bits: int) -> int:
    """Added to stored values to make them non-negative: 2^(bits-1) for int16, else 0."""
    return 1 << (bits - 1) if np.dtype(dtype) == np.int16 else 0


@dataclass(frozen=True)
class Image:
    """Pixels plus what is needed to code them exactly.

    Attributes:
        pixels: (H, W, C) array, dtype uint8 / uint16 / int16, C in 1..4.
        bits: significant bits of the coded (offset, non-negative) integers, 8..16.
        metadata_kind, metadata: what the container keeps beside the pixels (0 and b"" for
            none; :data:`hpac.fileformat.METADATA_DICOM` and the DICOM header for DICOM input;
            :data:`hpac.fileformat.METADATA_IMAGE` and the record set of PNG and TIFF metadata).
    """

    pixels: np.ndarray
    bits: int
    metadata_kind: int = 0
    metadata: bytes = b""

    @property
    def offset(self) -> int:
        """Added to stored values to make them non-negative (signed data only)."""
        return signed_offset(self.pixels.dtype, self.bits)

    def symbols(self) -> np.ndarray:
        """(H, W, C) int32 in [0, 2^bits)."""
        return self.pixels.astype(np.int32) + self.offset


def as_image(arr: np.ndarray) -> Image:
    """Validate an array and detect its significant bit depth."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or not 1 <= arr.shape[2] <= 4:
        raise UnsupportedImageError(f"expected an (H, W) or (H, W, C<=4) array, got shape {arr.shape}")
    if arr.dtype.name not in SUPPORTED_DTYPES:
        raise UnsupportedImageError(f"unsupported dtype {arr.dtype}; use one of {', '.join(SUPPORTED_DTYPES)}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise UnsupportedImageError(f"empty image of shape {arr.shape}")
    return Image(np.ascontiguousarray(arr), detect_bits(arr))


def detect_bits(arr: np.ndarray) -> int:
    """Smallest depth >= 8 holding every value (signed data: two's complement range)."""
    if arr.dtype == np.uint8 or arr.size == 0:
        return 8
    if arr.dtype == np.int16:
        lo, hi = int(arr.min()), int(arr.max())
        need = max((-lo - 1).bit_length() if lo < 0 else 0, hi.bit_length()) + 1
        return max(8, need)
    return max(8, int(arr.max()).bit_length())


def check_size(height: int, width: int, channels: int = 1) -> None:
    """Refuse an image the format cannot hold, from its declared size: a small file can
    declare a huge image (a PNG of 40000 x 40000 zeros is 1.5 MB), so this runs before any
    pixel is decoded. (0, 0) means the size is not known before decoding."""
    if fileformat.too_big(height, width):
        raise UnsupportedImageError(f"image {height}x{width} exceeds the format limit of {fileformat.MAX_PIXELS} "
                                    "pixels")
    if channels > 4:
        raise UnsupportedImageError(f"image with {channels} channels (hpac codes 1 to 4)")


def to_gray_luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 1) uint8 luma (ITU-R 601 weights, integer rounding)."""
    x = rgb.astype(np.int32)
    y = (299 * x[..., 0] + 587 * x[..., 1] + 114 * x[..., 2] + 500) // 1000
    return y.astype(rgb.dtype)[..., None]
