"""The classical lossless codecs hpac uses beside its model: WebP and JPEG XL (through
imagecodecs). Their headers are read here, so that a declared size is checked before any
decoder allocates it: for input files (:mod:`hpac.io.readers`) and for the streams of a file's
classical regions (:mod:`hpac.entropy.regions`).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import UnsupportedImageError

WEBP_MAX_SIDE = 16383  # libwebp's limit


def webp_lossless(values: np.ndarray, method: int) -> bytes:
    """Lossless WebP of (h, w, 1 | 3) uint8 values (gray as R = G = B: WebP has no gray mode);
    ``method`` 0 (fastest) .. 6 (smallest)."""
    import imagecodecs

    rgb = np.repeat(values, 3, axis=2) if values.shape[2] == 1 else values
    return imagecodecs.webp_encode(np.ascontiguousarray(rgb), level=100, lossless=True, method=method)


def jxl_lossless(values: np.ndarray, effort: int, threads: int = 1) -> bytes:
    """Lossless JPEG XL of (h, w, 1 | 3) uint8 / uint16 values; ``effort`` 1 .. 9 (the bytes do
    not depend on ``threads``)."""
    import imagecodecs

    return imagecodecs.jpegxl_encode(np.ascontiguousarray(values[:, :, 0] if values.shape[2] == 1 else values),
                                     lossless=True, effort=effort, numthreads=threads)


def webp_size(data: bytes) -> tuple[int, int]:
    """(height, width) a WebP declares: the VP8X canvas, or the VP8L header's 14-bit fields."""
    if data[12:16] == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[27:30], "little") + 1, int.from_bytes(data[24:27], "little") + 1
    if data[12:16] == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    raise UnsupportedImageError("WebP header without a size")


JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"


class JxlHeader(NamedTuple):
    height: int
    width: int
    animated: bool
    xyb: bool  # colours coded as XYB: what lossy JPEG XL does, and lossless JPEG XL never


class _Bits:
    """JPEG XL's bit reader: least significant bit first; U32 fields as (distribution, extra bits)."""

    def __init__(self, data: bytes):
        self.value, self.n, self.pos = int.from_bytes(data, "little"), 8 * len(data), 0

    def u(self, n: int) -> int:
        if self.pos + n > self.n:
            raise UnsupportedImageError("JPEG XL header is truncated")
        out = (self.value >> self.pos) & ((1 << n) - 1)
        self.pos += n
        return out

    def u32(self, *dists: tuple[int, int]) -> int:
        """U32(d0, d1, d2, d3), each (offset, bits): a 2-bit selector, then offset + u(bits)."""
        offset, bits = dists[self.u(2)]
        return offset + self.u(bits)


_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}
_JXL_SIZE = ((1, 9), (1, 13), (1, 18), (1, 30))
_JXL_BITS_PER_SAMPLE = ((8, 0), (10, 0), (12, 0), (1, 6))


def _jxl_codestream(data: bytes) -> bytes:
    """The start of a JPEG XL codestream: the file itself, or from the container's jxlc / first
    jxlp box (ISO/IEC 18181-2)."""
    if data[:2] == b"\xff\x0a":
        return data
    pos = 0
    while pos + 8 <= len(data):
        size, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        head = 8
        if size == 1:
            size, head = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        if kind in (b"jxlc", b"jxlp"):
            body = data[pos + head + (4 if kind == b"jxlp" else 0) :]
            return body if size == 0 else body[: size - head - (4 if kind == b"jxlp" else 0)]
        if size < head:
            break
        pos += size
    raise UnsupportedImageError("JPEG XL container without a codestream")


def jxl_header(data: bytes) -> JxlHeader:
    """Size, animation and colour coding of a JPEG XL file from its SizeHeader and ImageMetadata
    (ISO/IEC 18181-1), read before any pixel is decoded."""
    stream = _jxl_codestream(data)
    if stream[:2] != b"\xff\x0a":
        raise UnsupportedImageError("JPEG XL codestream without its signature")
    b = _Bits(stream[2:2 + 512])  # the headers read here fit in far fewer bytes

    def dim(small: bool) -> int:
        return (b.u(5) + 1) * 8 if small else b.u32(*_JXL_SIZE)

    small = bool(b.u(1))
    height = dim(small)
    ratio = b.u(3)
    width = dim(small) if ratio == 0 else height * _JXL_RATIOS[ratio][0] // _JXL_RATIOS[ratio][1]
    if b.u(1):  # all_default: XYB, no animation
        return JxlHeader(height, width, False, True)
    animated = False
    if b.u(1):  # extra_fields
        b.u(3)  # orientation
        if b.u(1):  # intrinsic size
            s = bool(b.u(1))
            dim(s)
            if b.u(3) == 0:
                dim(s)
        if b.u(1):  # preview
            if b.u(1):
                b.u32((16, 0), (32, 0), (1, 5), (33, 9))
            else:
                b.u32((1, 6), (65, 8), (321, 10), (1345, 12))
            if b.u(3) == 0:
                if b.u(1):
                    b.u32((16, 0), (32, 0), (1, 5), (33, 9))
                else:
                    b.u32((1, 6), (65, 8), (321, 10), (1345, 12))
        animated = bool(b.u(1))
        if animated:
            return JxlHeader(height, width, True, False)
    _jxl_bit_depth(b)
    b.u(1)  # modular_16_bit_buffer_sufficient
    for _ in range(b.u32((0, 0), (1, 0), (2, 4), (1, 12))):  # extra channels
        if b.u(1):  # all_default (an 8-bit alpha channel)
            continue
        kind = b.u32((0, 0), (1, 0), (2, 4), (18, 6))
        _jxl_bit_depth(b)
        b.u32((0, 0), (3, 0), (4, 0), (1, 3))  # dim_shift
        for _ in range(b.u32((0, 0), (0, 4), (16, 5), (48, 10))):  # name, UTF-8 bytes
            b.u(8)
        if kind == 0:  # alpha
            b.u(1)
        elif kind == 2:  # spot colour: four float16
            b.u(64)
        elif kind == 5:  # colour filter array
            b.u32((1, 0), (0, 2), (3, 4), (19, 8))
    return JxlHeader(height, width, animated, bool(b.u(1)))


def _jxl_bit_depth(b: _Bits) -> None:
    if b.u(1):  # float samples
        b.u32((32, 0), (16, 0), (24, 0), (1, 6))
        b.u(4)
    else:
        b.u32(*_JXL_BITS_PER_SAMPLE)
