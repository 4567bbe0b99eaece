"""SARP-FT adapters as the file holds them: integers, their coding, and the merge.

Adapters are LoRA with a fixed projection (LoRA-FA; Hu et al. 2021, Zhang et al. 2023): every
adapted 1x1 layer W (out, in) becomes ``W + qstep/sqrt(in) * B @ A`` where ``A`` (r, in) is a
pseudo-random +-1 matrix that both sides derive from integer hashing (never sent) and ``B``
(out, r) holds the integers that travel in the file (Laplace-coded with the best of a few
scales). The decoder merges in float64 and rounds once to float32, so both sides hold
bit-identical weights on any machine. The encoder's fitting is :mod:`hpac.adapters.fit`; this
module, the decoder's side, works on the float weights as numpy arrays (no torch).
"""
from __future__ import annotations

import math
import struct
from decimal import Decimal, localcontext
from functools import lru_cache
from typing import Sequence

import numpy as np

from ..errors import FormatError
from ..nn.architecture import ModelConfig

TARGETS = ("to_av", "proj", "mlp_up", "mlp_down")  # adapted 1x1 layers of every GatedBlock
QSTEPS = (2e-3, 4e-3, 8e-3, 16e-3, 32e-3, 64e-3)  # value of one adapter integer step: the encoder picks one
MAX_Q = 4095  # adapter integers are clamped to [-MAX_Q, MAX_Q]
PRIOR_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # Laplace scales (integer units) the encoder picks from
MAX_RANK = 16


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 (wrapping): integer hashing that gives the same
    numbers on every machine."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)).astype(np.uint64)
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)).astype(np.uint64)
    return x ^ (x >> np.uint64(31))


def projection(layer: int, rank: int, fan_in: int) -> np.ndarray:
    """The fixed A (rank, fan_in) of adapter ``layer``: +-1 signs from integer hashing (float64;
    scaled by 1/sqrt(fan_in) where used)."""
    idx = np.arange(rank * fan_in, dtype=np.uint64) + np.uint64((layer * 64 + rank) << 32)
    signs = (splitmix64(idx) >> np.uint64(63)).astype(np.float64) * 2.0 - 1.0
    return signs.reshape(rank, fan_in)


def adapted_weights(cfg: ModelConfig) -> list[str]:
    """The weights (state_dict names) of every adapted 1x1 layer, in file order: TARGETS of
    each block.

    Adapting the head too was measured and lost: 0.4% instead of 1.8% on held-out training
    images at the same budget (its updates shift every mixture parameter at once)."""
    return [f"blocks.{i}.{name}.weight" for i in range(cfg.blocks) for name in TARGETS]


def adapter_shapes(cfg: ModelConfig) -> list[tuple[int, int]]:
    """(out, in) of every adapter's layer, in file order (B of a rank-r adapter is (out, r))."""
    shapes = cfg.weight_shapes()
    return [shapes[name] for name in adapted_weights(cfg)]


def merge(state: dict[str, np.ndarray], cfg: ModelConfig, rank: int, qstep: float,
          ints: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The float weights ``state`` (float32 arrays, state_dict names) with adapters merged:
    W' = W + qstep/sqrt(in) * B_int @ signs, a new dict (the others shared).

    Computed in float64 (exact integer products) and rounded once to float32, so every
    machine gets the same weights."""
    out = dict(state)
    for j, (name, b) in enumerate(zip(adapted_weights(cfg), ints)):
        o, n = state[name].shape
        delta = b.astype(np.float64).reshape(o, rank) @ projection(j, rank, n)
        w = np.asarray(state[name], np.float32).astype(np.float64) + delta * (qstep / math.sqrt(n))
        out[name] = w.astype(np.float32)
    return out


@lru_cache(maxsize=len(PRIOR_SCALES))
def int_model(scale_index: int):
    """constriction's model of one adapter integer (offset by MAX_Q): Laplace(0, scale) on
    [-MAX_Q, MAX_Q] as a table computed in 50-digit decimal arithmetic (libm's exp may round
    differently on another machine), so every machine codes the adapters alike."""
    import constriction

    with localcontext() as ctx:
        ctx.prec = 50
        inv = 1 / Decimal(PRIOR_SCALES[scale_index])
        r, upper = (-inv).exp(), (-inv / 2).exp()  # upper: P(X > k + 1/2) / 2 at k = 0
        side = [1 - upper]  # x = 0: both halves
        for _ in range(MAX_Q):  # |x| = k: half the mass between k - 1/2 and k + 1/2
            side.append((upper - upper * r) / 2)
            upper *= r
    table = np.array([float(v) for v in side[:0:-1] + side], dtype=np.float32)
    return constriction.stream.model.Categorical(table, perfect=False)


def encode_ints(rank: int, qi: int, ints: Sequence[np.ndarray]) -> bytes:
    """Adapter integers -> bytes: u8 rank, u8 step index, u8 scale index, u32 words, words."""
    import constriction

    flat = np.concatenate([b.reshape(-1) for b in ints]).astype(np.int32)
    best = None
    for si in range(len(PRIOR_SCALES)):
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(flat + MAX_Q, int_model(si))
        words = enc.get_compressed()
        if best is None or words.nbytes < best[1].nbytes:
            best = (si, words)
    si, words = best
    return _BLOB.pack(rank, qi, si, words.size) + words.astype("<u4").tobytes()


_BLOB = struct.Struct("<BBBI")


def decode_ints(cfg: ModelConfig, blob: bytes) -> tuple[int, float, list[np.ndarray]]:
    """Inverse of :func:`encode_ints` for the architecture ``cfg``: (rank, qstep, ints); validates everything."""
    import constriction

    if len(blob) < _BLOB.size:
        raise FormatError("adapter section is truncated")
    rank, qi, si, n_words = _BLOB.unpack_from(blob)
    if not 1 <= rank <= MAX_RANK or qi >= len(QSTEPS) or si >= len(PRIOR_SCALES) or len(blob) != _BLOB.size + 4 * n_words:
        raise FormatError("invalid adapter section")
    shapes = adapter_shapes(cfg)
    total = sum(o * rank for o, _ in shapes)
    words = np.frombuffer(blob, dtype="<u4", offset=_BLOB.size).astype(np.uint32)
    try:
        dec = constriction.stream.queue.RangeDecoder(words)
        flat = dec.decode(int_model(si), total) - MAX_Q
    except BaseException as exc:  # a Rust panic on garbage is a BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit, MemoryError)):
            raise
        raise FormatError(f"adapter section is corrupt ({exc})") from None
    out, pos = [], 0
    for o, _ in shapes:
        out.append(np.asarray(flat[pos : pos + o * rank], dtype=np.int64).reshape(o, rank))
        pos += o * rank
    return rank, QSTEPS[qi], out
