"""Pillow plugin: ``import hpac.integrations.pillow`` and ``Image.open("x.hpac")`` / ``img.save("x.hpac")`` work.

Importing this module registers the plugin (that is its purpose); :func:`register` does it
explicitly and may be called again. Modes: L, LA, RGB, RGBA (8-bit), I;16 (16-bit gray), and
I (32-bit ints holding 16-bit values; saved as unsigned or signed 16-bit, opened as I;16 or I).
Save options: ``img.save(f, effort=0, threads=2)`` as in :func:`hpac.encode`. Metadata: the
image's (or the save call's) ``icc_profile``, ``exif``, ``xmp`` and ``dpi`` are kept; opening a
file puts what it keeps in ``img.info`` (:func:`hpac.read_info`).
"""
from __future__ import annotations

from typing import IO

import numpy as np
from PIL import Image, ImageFile

from .. import api, container, fileformat
from ..io import metadata
from ..errors import UnsupportedImageError
from ..io.image import Image as HpacImage
from ..io.image import as_image

FORMAT = "HPAC"
# (dtype, channels) of the decoded array -> (Pillow mode, raw mode of its bytes)
_MODES = {
    ("uint8", 1): ("L", "L"),
    ("uint8", 2): ("LA", "LA"),
    ("uint8", 3): ("RGB", "RGB"),
    ("uint8", 4): ("RGBA", "RGBA"),
    ("uint16", 1): ("I;16", "I;16"),
    ("int16", 1): ("I", "I;16S"),  # Pillow has no signed 16-bit mode; I (int32) holds it exactly
}
SAVE_MODES = ("L", "LA", "RGB", "RGBA", "I;16", "I")


def _accept(prefix: bytes) -> bool:
    return prefix[: len(fileformat.MAGIC)] == fileformat.MAGIC


class HpacImageFile(ImageFile.ImageFile):
    """An .hpac file opened by Pillow; pixels are decoded on ``load()``."""

    format = FORMAT
    format_description = "hpac learned lossless image"

    def _open(self) -> None:
        assert self.fp is not None
        # the CRCs cover header and payload together, so validating the header reads the whole file
        header, _ = container.read(self.fp.read())
        key = (header.dtype, header.channels)
        if key not in _MODES:
            raise UnsupportedImageError(
                f"{header.channels}-channel {header.dtype} images have no Pillow mode; use hpac.decode()")
        self._mode = _MODES[key][0]
        self._size = (header.width, header.height)
        self.info["bits"] = header.bits
        if header.metadata_kind == fileformat.METADATA_IMAGE:
            self.info.update(metadata.from_bytes(header.metadata).pillow_info())
        self.tile = [("hpac", (0, 0) + self.size, 0, (_MODES[key][1],))]  # a plain tuple: Pillow 10 has no _Tile


class HpacDecoder(ImageFile.PyDecoder):
    """Decodes the whole file in one call (hpac has no partial decoding)."""

    _pulls_fd = True

    def decode(self, buffer: bytes) -> tuple[int, int]:
        assert self.fd is not None and self.im is not None
        w, h = self.im.size
        # Pillow's decompression-bomb check (Image.MAX_IMAGE_PIXELS) has already accepted this size
        arr = api.decode(self.fd.read(), max_pixels=w * h)
        self.set_as_raw(np.ascontiguousarray(arr).tobytes(), self.args[0])
        return -1, 0


def _to_array(im: Image.Image) -> np.ndarray:
    """(H, W[, C]) uint8 / uint16 / int16 pixels of an image in one of :data:`SAVE_MODES`."""
    if im.mode not in SAVE_MODES:
        raise UnsupportedImageError(f"cannot write mode {im.mode} as HPAC (use one of {', '.join(SAVE_MODES)})")
    arr = np.asarray(im)
    if im.mode != "I":
        return arr
    lo, hi = int(arr.min()), int(arr.max())
    if lo >= 0 and hi <= 0xFFFF:
        return arr.astype(np.uint16)
    if -0x8000 <= lo and hi <= 0x7FFF:
        return arr.astype(np.int16)
    raise UnsupportedImageError(f"mode I values {lo}..{hi} do not fit 16 bits")


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    opts = im.encoderinfo
    img = as_image(_to_array(im))
    meta = metadata.from_pillow_info({**im.info, **opts})
    if meta:
        img = HpacImage(img.pixels, img.bits, fileformat.METADATA_IMAGE, meta.to_bytes())
    fp.write(api.encode(img, effort=opts.get("effort"), threads=opts.get("threads")))


def register() -> None:
    """Register the HPAC format (open, save, the .hpac extension) with Pillow; idempotent."""
    Image.register_open(FORMAT, HpacImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, ".hpac")
    Image.register_mime(FORMAT, "image/x-hpac")
    Image.register_decoder("hpac", HpacDecoder)


register()
