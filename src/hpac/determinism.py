"""This machine's float arithmetic, as hpac's coding uses it, in one hash.

A file decodes only where the decoder's float32 kernels give the encoder's results bit for
bit (docs/determinism.md). Two machines with the same :func:`fingerprint` computed the same
coding tables for a probe that runs every kind of operation coding runs; machines with
different fingerprints disagree somewhere, and files written on one will most likely not
decode on the other (the decoder then stops with a ChecksumError, never returns other pixels).
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 (wrapping): integer hashing that gives the same
    numbers on every machine, for the adapters' fixed projections and the probes below."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)).astype(np.uint64)
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)).astype(np.uint64)
    return x ^ (x >> np.uint64(31))


def hashed_uniform(seed: int, n: int) -> np.ndarray:
    """(n,) float32 in [-1, 1) from integer hashing: the same numbers on every machine and
    with every numpy (no random generator's version-dependent stream)."""
    h = splitmix64(np.arange(n, dtype=np.uint64) + np.uint64(seed << 32))
    return ((h >> np.uint64(40)).astype(np.float64) / 2.0**23 - 1.0).astype(np.float32)


@lru_cache(maxsize=1)
def fingerprint() -> str:
    """16 hex digits: sha256 of two small probe files coded with a fixed network.

    The probes are an 8-bit RGB image and a 12-bit gray one with 20% zeros, so the hash covers
    the network's kernels (convolutions, matrix products, LayerNorm, GELU, SiLU), the mixture
    (softmax, exp, sigmoid), AFC's windows and both table stages, zero flags and the range
    coder. Takes about a tenth of a second."""
    import torch

    from . import codec
    from .catalog import CodecModel
    from .model import HPACNet, ModelConfig

    files = []
    for channels, seed in ((3, 1), (1, 2)):
        net = HPACNet(ModelConfig(channels=channels, dim=16, blocks=2, kernel=7, mlp_ratio=2, mixtures=3,
                                  patch=16)).eval()
        with torch.no_grad():
            for i, p in enumerate(net.parameters()):
                p.copy_(torch.from_numpy(hashed_uniform(seed * 1000 + i, p.numel()).reshape(p.shape)) * 0.3)
        model = CodecModel(f"probe{channels}", net, f"{seed:016x}", {})
        y, x = np.mgrid[0:21, 0:19]
        smooth = np.sin(x / 3.0) + np.cos(y / 4.0) + 0.25 * hashed_uniform(seed, x.size).reshape(x.shape)
        if channels == 3:
            pixels = np.stack([smooth + k for k in range(3)], -1) * 40 + 100
            pixels = pixels.clip(0, 255).astype(np.uint8)
        else:
            pixels = (smooth * 800 + 2048).clip(0, 4095).astype(np.uint16)
            pixels[hashed_uniform(seed + 7, x.size).reshape(x.shape) < -0.6] = 0
        files.append(codec.encode(pixels, {channels: model}, threads=1))
    return hashlib.sha256(b"".join(files)).hexdigest()[:16]
