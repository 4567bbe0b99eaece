"""Zero flags: a point mass at symbol 0 of a gray plane (CT padding, MR background).

After the value map, symbol 0 is the plane's smallest value; on CT and MR slices it fills
the padding outside the scan circle or the air around the body, 20-25% of the pixels in
one solid region. The mixture is smooth, so the network still spends 0.15 bits on such a
pixel at effort 0 and 0.25 under adapters (docs/sarp-ft.md, session 10). Where a plane's header sets its zero-flag option, every subpixel first codes a flag
"symbol is 0" and, where the flag is clear, its value from the mixture conditioned on not
being 0 (:func:`hpac.entropy.afc.decode_symbols` with ``low = 1``).

A flag's probability is adaptive per context and per shard: counts of the flags already
coded in the shard, updated after every group, so both sides hold the same counts. The
context is what predicts padding: how many of the in-patch causal neighbours W, N, NW, NE
(all coded in earlier groups) are real pixels and 0 (k of n: 15 pairs), times the
mixture's own probability of 0 in ``len(P0_EDGES) + 1`` buckets.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .afc import categorical, floor_tables

NEIGHBOURS = ((0, -1), (-1, 0), (-1, -1), (-1, 1))  # (dy, dx): W, N, NW, NE, in groups before c + 2r
_NEIGHBOURS = np.array(NEIGHBOURS, np.int64)  # (4, 2), for the kernel
P0_EDGES = np.array([1e-3, 1e-2, 0.1, 0.5, 0.9, 0.99], np.float32)  # buckets of the mixture's P(x = 0)
N_PAIRS = 15  # (k, n) with 0 <= k <= n <= 4
N_CONTEXTS = N_PAIRS * (len(P0_EDGES) + 1)
PRIOR = 0.4  # pseudo-count of each outcome in a fresh context (Krichevsky-Trofimov: 0.5)
MIN_SHARE = 0.01  # the encoder sets the option where at least this share of a gray plane is 0


def wanted(sym: np.ndarray) -> bool:
    """Whether the encoder flags zeros in a plane: a gray plane ((H, W, 1) coded symbols)
    whose zeros are at least MIN_SHARE of its pixels."""
    return sym.ndim == 3 and sym.shape[-1] == 1 and sym.size > 0 and np.count_nonzero(sym == 0) >= MIN_SHARE * sym.size


class ZeroFlags:
    """The flag contexts and counts of one shard."""

    def __init__(self) -> None:
        self.counts = np.zeros((N_CONTEXTS, 2), dtype=np.int64)  # (not 0, 0) per context

    @staticmethod
    def neighbour_pairs(out: np.ndarray, valid: np.ndarray, rows: np.ndarray,
                        cols: np.ndarray) -> np.ndarray:
        """(B * n,) int64 index of (k, n) at each position of a group: n of the causal
        neighbours are real pixels, k of them 0.

        Args:
            out: (B, P, P, 1) symbols, final wherever an earlier group is.
            valid: (B, P, P) bool, real pixels.
            rows, cols: (n,) int64 positions of the group inside a patch.
        """
        b, patch = out.shape[0], out.shape[1]
        pairs = np.empty(b * rows.shape[0], np.int64)
        _pairs(out.reshape(b, -1), valid.reshape(b, -1), rows, cols, patch, _NEIGHBOURS, pairs)
        return pairs

    @staticmethod
    def contexts(pairs: np.ndarray, p0: np.ndarray) -> np.ndarray:
        """(M,) int64 contexts from neighbour pairs (M,) and the mixture's mass at 0 (M,)
        float32: bucket i holds P0_EDGES[i - 1] < p0 <= P0_EDGES[i] (float32 comparisons)."""
        return pairs * (len(P0_EDGES) + 1) + np.searchsorted(P0_EDGES, p0, side="left")

    def tables(self, ctx: np.ndarray) -> np.ndarray:
        """(M, 2) float32 probabilities of (not 0, 0) for contexts ``ctx`` (M,)."""
        c = self.counts[ctx].astype(np.float64) + PRIOR
        return (c / c.sum(1, keepdims=True)).astype(np.float32)

    def encode_op(self, ctx: np.ndarray, is0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The range-coder call that encodes the (M,) int32 flags of one group under contexts
        ``ctx`` (M,): (values, (M, 2) table), for :func:`hpac.entropy.afc.encode_calls` to make
        ahead of the group's symbols (flooring the table as it floors its own); then counts
        them. The encoder knows every flag in advance, so it plans a batch of groups before
        coding any."""
        probs = self.tables(ctx)
        self._count(ctx, is0)
        return is0, probs

    def decode(self, coder, ctx: np.ndarray, floored: bool) -> np.ndarray:
        """Decode the (M,) int32 flags of one group (what :meth:`encode_op` planned), then count them."""
        is0 = coder.decode(categorical(), self._probs(ctx, floored)).astype(np.int32)
        self._count(ctx, is0)
        return is0

    def _count(self, ctx: np.ndarray, is0: np.ndarray) -> None:
        self.counts += np.bincount(ctx * 2 + is0, minlength=self.counts.size).reshape(self.counts.shape)

    def _probs(self, ctx: np.ndarray, floored: bool) -> np.ndarray:
        probs = self.tables(ctx)
        return floor_tables(probs) if floored else probs


@njit(cache=True)
def _pairs(o, v, rows, cols, patch, nbrs, out):
    """out[b n + i] = n (n + 1) / 2 + k at position (rows[i], cols[i]) of patch b: n of its
    neighbours (dy, dx) in ``nbrs`` (4, 2) lie in the patch and are real (v (B, P P) bool),
    k of those are 0 (o (B, P P) symbols). One step's positions: numpy's gathers cost more."""
    n = rows.shape[0]
    for b in range(o.shape[0]):
        for i in range(n):
            real, zero = 0, 0
            for t in range(nbrs.shape[0]):
                r, c = rows[i] + nbrs[t, 0], cols[i] + nbrs[t, 1]
                if r >= 0 and 0 <= c < patch:
                    at = r * patch + c
                    if v[b, at]:
                        real += 1
                        if o[b, at] == 0:
                            zero += 1
            out[b * n + i] = real * (real + 1) // 2 + zero
