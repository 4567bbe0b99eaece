"""Patches coded by a classical codec: where the model loses, on synthetic content.

The network was trained on photos; flat colours, repeated glyphs and hard edges cost it several
times what LZ77-style coders pay (dev/screen: 0.44 bpsp against lossless WebP's 0.10). So the
encoder decides, per P x P patch of an 8-bit plane (the model's own patches, which it codes
independently), whether the model or a classical codec codes it:

- a patch whose pixels mostly repeat a neighbour (:data:`FLAT_MIN`) is probed with WebP's
  fastest lossless method alone: below :data:`CLEAR_BPSP` it is classical; below
  :data:`AMBIGUOUS_BPSP` it is ambiguous, and a few ambiguous patches (:data:`PROBES`, their
  top-left :data:`PROBE_SIDE` square) are coded both by the model and by WebP: the smaller
  total settles every ambiguous patch of the plane (photos with flat areas: the model;
  text and charts: WebP); other patches stay with the model;
- a plane with :data:`MOSTLY` of its patches classical is classical throughout (a chart's
  dense corner costs the model more than WebP, which reuses the rest of the chart);
- all classical patches of a plane are one image of the whole plane with the model's patches
  blanked to 0 (a run that costs nothing), so matches reach across patches: lossless WebP, or
  lossless JPEG XL at effort 9 where that is smaller (tried where most patches are classical).

Thresholds set on charts and web pages made for tuning (matplotlib; headless Chromium on the
Python 3.11 HTML docs, one page with a photo in it) against the training photos: on those
photos no patch goes classical where the model was smaller. The decision reads pixels and the
integer model's own bytes only: the same on every machine and thread count. The container
stores, per plane, the codec, a bitmap of its patches and its stream (docs/format.md); the
model's shards hold the other patches in order.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..io.classical import jxl_header, jxl_lossless, webp_lossless, WEBP_MAX_SIDE, webp_size
from ..errors import FormatError, UnsupportedImageError

FLAT_MIN = 0.7  # share of a patch's pixels equal to their left or upper neighbour to be considered
CLEAR_BPSP = 0.3  # WebP's fastest probe below this: classical without asking the model
AMBIGUOUS_BPSP = 1.5  # below this (and above CLEAR_BPSP): ambiguous, settled by asking the model
PROBES = 4  # ambiguous patches probed per plane (evenly spaced); their sums decide them all
PROBE_SIDE = 64  # the probe codes the top-left PROBE_SIDE x PROBE_SIDE of a patch, by the model and by WebP
MOSTLY = 0.75  # a plane with at least this share of classical patches is classical throughout
PROBE_METHOD = 0  # libwebp lossless method of the probe (fastest)
STREAM_METHOD = 4  # and of the stored WebP stream: within 0.1% of method 6 on screenshots, ~12x faster
JXL_EFFORT = 9  # JPEG XL's effort where it is tried beside WebP
JXL_MIN_SHARE = 0.5  # JPEG XL is tried where classical patches are at least this share of the plane
CODECS = {1: "WebP lossless", 2: "JPEG XL lossless"}  # the section's codec byte


def flat_shares(values: np.ndarray, patch: int) -> np.ndarray:
    """(N,) float64: per patch of an (H, W, c) plane (row-major), the share of its pixels equal
    (every channel) to their left or upper neighbour in the same patch. One pass over the
    plane: patch by patch, numpy's calls cost more than the comparisons."""
    h, w, c = values.shape
    left = np.zeros((h, w), dtype=bool)
    up = np.zeros((h, w), dtype=bool)
    left[:, 1:] = up[1:] = True
    for k in range(c):  # (channel by channel: numpy's all() over a short last axis is slow)
        left[:, 1:] &= values[:, 1:, k] == values[:, :-1, k]
        up[1:] &= values[1:, :, k] == values[:-1, :, k]
    left[:, ::patch] = False  # a patch's first column: its left neighbour is another patch's
    up[::patch] = False
    same = left | up
    rows, cols = -(-h // patch), -(-w // patch)
    padded = np.zeros((rows * patch, cols * patch), np.int64)
    padded[:h, :w] = same
    count = padded.reshape(rows, patch, cols, patch).sum(axis=(1, 3)).reshape(-1)
    hs = np.minimum(patch, h - np.arange(rows) * patch)
    ws = np.minimum(patch, w - np.arange(cols) * patch)
    return count / (hs[:, None] * ws[None, :]).reshape(-1).astype(np.float64)


def _window(index: int, cols: int, patch: int, side: int | None = None) -> tuple[slice, slice]:
    """Rows and columns of patch ``index`` (row-major, ``cols`` a row) of a plane; its top-left
    ``side`` x ``side`` square where given."""
    r, c = divmod(index, cols)
    n = patch if side is None else side
    return slice(r * patch, r * patch + n), slice(c * patch, c * patch + n)


def _bitmap_bytes(n_patches: int) -> int:
    return -(-n_patches // 8)


def choose(values: np.ndarray, patch: int, model_bytes: Callable[[list[int], int], list[int]]) -> np.ndarray:
    """(N,) bool: which patches of an (H, W, c) uint8 plane a classical codec codes (patches
    row-major, as :func:`hpac.shards.to_patches` lays them out); none where WebP cannot hold
    the plane. ``model_bytes(indices, side)``: the bytes the model codes the top-left side x
    side pixels of each of those patches in, alone (asked for at most :data:`PROBES`)."""
    h, w, _ = values.shape
    rows, cols = -(-h // patch), -(-w // patch)
    out = np.zeros(rows * cols, dtype=bool)
    if values.dtype != np.uint8 or max(h, w) > WEBP_MAX_SIDE:
        return out
    ambiguous = []
    for i in np.flatnonzero(flat_shares(values, patch) >= FLAT_MIN).tolist():
        tile = values[_window(i, cols, patch)]
        bpsp = 8 * len(webp_lossless(tile, PROBE_METHOD)) / tile.size
        if bpsp < CLEAR_BPSP:
            out[i] = True
        elif bpsp < AMBIGUOUS_BPSP:
            ambiguous.append(i)
    if ambiguous:
        probed = [ambiguous[j] for j in np.linspace(0, len(ambiguous) - 1, min(PROBES, len(ambiguous))).astype(int)]
        side = min(patch, PROBE_SIDE)
        webp = sum(len(webp_lossless(values[_window(i, cols, patch, side)], STREAM_METHOD)) for i in probed)
        out[ambiguous] = webp < sum(model_bytes(probed, side))
    if out.mean() >= MOSTLY:
        out[:] = True
    return out


def encode(values: np.ndarray, chosen: np.ndarray, patch: int, threads: int = 1) -> bytes:
    """The section a plane's header stores: codec byte, the bitmap of the ``chosen`` (N,)
    patches, then one lossless stream of the (H, W, c) uint8 plane with every other patch 0:
    WebP, or JPEG XL where it is smaller (tried where the chosen patches are most of the plane)."""
    cols = -(-values.shape[1] // patch)
    blanked = np.zeros_like(values)
    for i in np.flatnonzero(chosen).tolist():
        blanked[_window(i, cols, patch)] = values[_window(i, cols, patch)]
    codec, stream = 1, webp_lossless(blanked, STREAM_METHOD)
    if chosen.mean() >= JXL_MIN_SHARE:
        jxl = jxl_lossless(blanked, JXL_EFFORT, threads)
        if len(jxl) < len(stream):
            codec, stream = 2, jxl
    return bytes([codec]) + np.packbits(chosen, bitorder="little").tobytes() + stream


def codec_of(section: bytes) -> str:
    """The name of a section's codec ("" for an empty section)."""
    return CODECS.get(section[0], "unknown") if section else ""


def bitmap(section: bytes, n_patches: int) -> np.ndarray:
    """(N,) bool of a stored section's bitmap (all False for an empty section); the codec must
    be known, some patch chosen and the padding bits 0."""
    if not section:
        return np.zeros(n_patches, dtype=bool)
    n = _bitmap_bytes(n_patches)
    if section[0] not in CODECS:
        raise FormatError(f"unknown classical codec {section[0]} in a region section")
    if len(section) < 1 + n:
        raise FormatError("classical region section is truncated")
    bits = np.unpackbits(np.frombuffer(section[1 : 1 + n], np.uint8), bitorder="little")
    if bits[n_patches:].any() or not bits[:n_patches].any():
        raise FormatError("invalid classical region bitmap")
    return bits[:n_patches].astype(bool)


def decode(section: bytes, n_patches: int, height: int, width: int, channels: int) -> np.ndarray:
    """(H, W, channels) uint8 of a section's stream (only its chosen patches are meant); the
    stream's declared size is checked before it is decoded."""
    import imagecodecs

    stream = section[1 + _bitmap_bytes(n_patches) :]
    try:
        if section[0] == 1:
            size = webp_size(stream)
        else:
            head = jxl_header(stream)
            size = None if head.animated or head.xyb else (head.height, head.width)
    except UnsupportedImageError:
        size = None
    if size != (height, width):
        raise FormatError("classical region stream does not match the image size")
    try:
        out = imagecodecs.webp_decode(stream) if section[0] == 1 else imagecodecs.jpegxl_decode(stream)
    except Exception as exc:  # the libraries' errors: a corrupt stream
        raise FormatError(f"classical region stream is corrupt ({exc})") from None
    if out.ndim == 2:
        out = out[:, :, None]
    if out.shape[:2] != (height, width) or out.dtype != np.uint8:
        raise FormatError("classical region stream does not match the image size")
    if channels == 1:  # WebP holds gray as R = G = B
        return np.ascontiguousarray(out[:, :, 1:2] if out.shape[2] >= 3 else out[:, :, :1])
    if out.shape[2] < 3:
        raise FormatError("classical region stream has fewer channels than its plane")
    return np.ascontiguousarray(out[:, :, :3])
