"""Synthetic test images, numpy only: subprocess checks that coding never imports torch use
them as the tests do (conftest imports torch)."""
from __future__ import annotations

import numpy as np


def smooth_image(h: int, w: int, c: int, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """A natural-ish test image: gradients plus noise, full range of the dtype used."""
    rng = np.random.default_rng(seed)
    top = {np.uint8: 255, np.uint16: 4095, np.int16: 2047}[dtype]
    y, x = np.mgrid[0:h, 0:w]
    base = (np.sin(x / 5.0)[..., None] + np.cos(y / 7.0)[..., None] + np.arange(c)) * top / 6 + top / 2
    img = base + rng.normal(0, top / 40, (h, w, c))
    lo = -top - 1 if dtype == np.int16 else 0
    if dtype == np.int16:
        img = img * 2 - top
    return np.clip(np.round(img), lo, top).astype(dtype)


def scan_like(h: int, w: int, dtype=np.uint16, floor: int = 1000, seed: int = 0) -> np.ndarray:
    """A smooth noisy disc on padding of one value (``floor``), as a CT slice: (h, w)."""
    base = np.uint8 if dtype == np.uint8 else np.uint16
    inside = smooth_image(h, w, 1, base, seed)[:, :, 0].astype(np.int64) + floor + 1
    y, x = np.mgrid[0:h, 0:w]
    disc = (y - h / 2) ** 2 + (x - w / 2) ** 2 < (0.4 * min(h, w)) ** 2
    top = np.iinfo(dtype).max
    return np.where(disc, np.minimum(inside, top), floor).astype(dtype)


def tiny_crops(channels: int = 3, patch: int = 16) -> np.ndarray:
    """(N, P, P, C) int64: the P x P crops of a 64 x 64 smooth test image, row by row."""
    img = smooth_image(64, 64, channels, seed=1).astype(np.int64)
    n = 64 // patch
    return img.reshape(n, patch, n, patch, channels).transpose(0, 2, 1, 3, 4).reshape(-1, patch, patch, channels)
