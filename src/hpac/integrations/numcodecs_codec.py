"""The ``hpac`` numcodecs codec: lossless coding of image chunks, e.g. in zarr arrays.

Chunk layouts (dtype uint8 or uint16; int16 works too):

* (H, W), or (H, W, C) with C in 1..4: one image; the chunk's bytes are one .hpac file.
* any other 3-D chunk, read as (Z, Y, X): Z gray planes, each its own .hpac file, framed as
  ``b"HPACSTAK"``, u32 Z, Z x u32 file lengths (little-endian), then the files.

Decoding gives (H, W) for one channel; zarr reshapes to the chunk shape, or pass ``out``.

zarr format 3 takes it as the array's serializer::

    zarr.create_array(store, shape=..., chunks=..., dtype="uint16", serializer=HpacZarr3(effort=0),
                      compressors=None)

zarr format 2 as its compressor (``zarr_format=2, compressors=HpacCodec()``). The package's
entry points let ``numcodecs.get_codec({"id": "hpac"})`` and zarr (``"numcodecs.hpac"``
in array metadata) find both classes; :func:`register` does it by hand.
"""
from __future__ import annotations

import struct

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_bytes, ensure_ndarray, ndarray_copy

from .. import api, container, fileformat
from ..errors import FormatError, UnsupportedImageError

STACK_MAGIC = b"HPACSTAK"


class HpacCodec(Codec):
    """numcodecs codec ``hpac``.

    Args:
        effort: hpac effort level; 0 (the default here) codes with the pre-trained models only,
            which suits many small chunks; higher levels fine-tune per chunk (slower, smaller).
        threads: hpac worker threads per chunk; 1 by default because zarr and dask already
            code chunks in parallel. The bytes never depend on it; chunks decode on every machine.
    """

    codec_id = "hpac"

    def __init__(self, effort: int = 0, threads: int = 1) -> None:
        self.effort = effort
        self.threads = threads

    def encode(self, buf) -> bytes:
        """(H, W) / (H, W, C<=4) / (Z, Y, X) integer chunk -> bytes."""
        arr = ensure_ndarray(buf)
        if arr.ndim == 2 or (arr.ndim == 3 and 1 <= arr.shape[2] <= 4):
            return api.encode(arr, effort=self.effort, threads=self.threads)
        if arr.ndim != 3 or arr.shape[0] == 0:
            raise UnsupportedImageError(f"hpac codes 2-D or 3-D chunks, got shape {arr.shape}")
        if arr.size > fileformat.MAX_PIXELS:  # what decode accepts of a stack
            raise UnsupportedImageError(f"a 3-D chunk holds at most {fileformat.MAX_PIXELS} values, got shape {arr.shape}")
        files = [api.encode(plane, effort=self.effort, threads=self.threads) for plane in arr]
        return STACK_MAGIC + struct.pack(f"<{1 + len(files)}I", len(files), *map(len, files)) + b"".join(files)

    def decode(self, buf, out=None) -> np.ndarray:
        """bytes -> the chunk's pixels (written into ``out`` when given)."""
        data = ensure_bytes(buf)
        stacked = data[: len(STACK_MAGIC)] == STACK_MAGIC
        files = _stack_files(data) if stacked else [data]
        # every header first: a few hostile bytes could otherwise declare stacks of huge images
        values = sum(h.height * h.width * h.channels for h in (container.read(f)[0] for f in files))
        if len(files) > 1 and values > fileformat.MAX_PIXELS:
            raise FormatError(f"hpac chunk stack declares {values} values, above the {fileformat.MAX_PIXELS} a "
                              "chunk may hold")
        expected = None if out is None else ensure_ndarray(out).size
        if expected is not None and values != expected:
            raise FormatError(f"hpac chunk declares {values} values where the array expects {expected}")
        # a chunk's size was fixed by whoever wrote the array: refuse only what the format refuses
        arrs = [api.decode(f, threads=self.threads, max_pixels=fileformat.MAX_PIXELS) for f in files]
        return ndarray_copy(np.stack(arrs) if stacked else arrs[0], out)


def _stack_files(data: bytes) -> list[bytes]:
    """The .hpac files inside a stack blob, lengths checked against the blob's size."""
    head = len(STACK_MAGIC) + 4
    n = struct.unpack_from("<I", data, len(STACK_MAGIC))[0] if len(data) >= head else 0
    if n == 0 or head + 4 * n > len(data):
        raise FormatError("hpac chunk stack is truncated or empty")
    lengths = struct.unpack_from(f"<{n}I", data, head)
    ends = np.cumsum((head + 4 * n, *lengths)).tolist()
    if ends[-1] != len(data):
        raise FormatError("hpac chunk stack lengths do not match its size")
    return [data[a:b] for a, b in zip(ends[:-1], ends[1:])]


try:
    from zarr.codecs.numcodecs import _NumcodecsArrayBytesCodec
except ImportError:  # zarr < 3.1.3 or none: the numcodecs codec alone still serves zarr format 2
    _NumcodecsArrayBytesCodec = None

if _NumcodecsArrayBytesCodec is not None:

    class HpacZarr3(_NumcodecsArrayBytesCodec, codec_name="hpac"):
        """zarr format 3 serializer around :class:`HpacCodec` (``numcodecs.hpac`` in metadata);
        takes the same arguments."""


def register() -> None:
    """Register the codec with numcodecs (and zarr 3) where the entry points are not installed."""
    from numcodecs.registry import register_codec

    register_codec(HpacCodec)
    if _NumcodecsArrayBytesCodec is not None:
        from zarr.registry import register_codec as register_zarr_codec

        register_zarr_codec(HpacZarr3.codec_name, HpacZarr3)
