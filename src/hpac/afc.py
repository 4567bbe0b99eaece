"""AFC (Adaptive Focus Coding): mixture -> range-coded symbols without full-alphabet CDFs.

For every subpixel the mixture is turned into a *focus window* around its centre:

* ``reach`` = max over components of ``|mu_k - centre| + t_k * s_k``, with the weight-aware
  tail ``t_k = ln(w_k / ESCAPE_MASS)`` (0 for ``w_k <= ESCAPE_MASS``): a logistic component puts
  ``w_k e^-t_k = ESCAPE_MASS`` beyond ``t_k`` scales on each side, so the window leaves at most
  about ``2 K ESCAPE_MASS`` of mass outside, and weak components no longer widen it;
* the window is ``width`` bins of ``delta`` symbols (both powers of two,
  ``MIN_BINS <= width <= MAX_BINS``), the smallest that covers ``centre +- reach``, aligned to
  ``delta`` and clipped into ``[0, 2^bits)``;
* stage 1 codes the bin index with a categorical over ``width`` bins plus one ESCAPE entry
  holding all mass outside the window;
* stage 2 (only where ``delta > 1``) codes the offset inside the bin with the mixture's exact
  conditional distribution over the ``delta`` symbols of that bin;
* an escaped value is coded uniformly over ``[0, 2^bits)``.

With ``low = 1`` (a subpixel whose zero flag said "not 0", :mod:`hpac.zeroflags`) the
alphabet is ``[1, 2^bits)``: windows start at 1 or above, and the mixture's mass below
symbol 1 is dropped rather than given to the first bin, so the code is the mixture
conditioned on ``x != 0``. ``low = 0`` is the coding of every file before version 6.

So an 8-bit subpixel costs at most ``(MAX_BINS + 1) * K`` logistic evaluations, and a 16-bit
one ``(MAX_BINS + delta + 2) * K``, never a 65,536-entry table. Stream order inside one call:
stage-1 buckets by ascending width, stage-2 buckets by ascending delta, then escapes.
Encoder and decoder call :func:`code_symbols` with identical float inputs, so every table is
identical on both sides; constriction turns each table into exact fixed-point frequencies,
giving every entry a nonzero probability.

The float32 path computes every exactly rounded step (+, -, *, /, comparisons, integers) in
numpy and only the rest in torch (softmax, exp, log, the sums over components and rows, the
logistic CDF), each torch call on a tensor of the same shape and layout as when all of it
ran in torch: same values, bit for bit, for a fraction of the per-call overhead (about a
hundred small torch calls a call before, a fixed ~1.2 ms that dominated a group step at one
or a few patches a shard). Portable files (:mod:`hpac.exact`) keep their torch arithmetic;
the bookkeeping around the tables (buckets, stream order) is integer work, shared by both.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, NamedTuple

import numpy as np
import torch

ESCAPE_MASS = 3e-4  # per component and side. Measured on dev crops: escapes cost <= 0.002 bits a
# subpixel; 1e-4 widened tables by 12-19%, 1e-3 cost up to 0.008 bits (scripts/afc_windows.py)
MIN_BINS = 4
MAX_BINS = 256


TABLE_FLOOR = 2.0**-12  # version-5 tables: least share of a row's total any entry gets


def floor_tables(probs: np.ndarray, exact: bool = False) -> np.ndarray:
    """(n, E) float32 tables with every entry raised to TABLE_FLOOR of its row's total.

    constriction quantises a float table lazily from float32 running sums; where an entry is
    below their rounding error (~E * 2^-24 of the total) the last symbol can get a zero
    frequency and the coder panics. A floor of 2^-12 is far above that error. The floor
    changes the tables, so it is used only in version-5 files: the encoder falls back to it
    (and writes version 5) when constriction refuses a table of the normal coding."""
    # portable files sum each row in index order (a scan); numpy's sum may pair terms per CPU
    total = np.add.accumulate(probs, axis=1, dtype=np.float32)[:, -1:] if exact else probs.sum(1, keepdims=True, dtype=np.float32)
    return np.maximum(probs, total * np.float32(TABLE_FLOOR))


@lru_cache(maxsize=1)
def categorical():
    """constriction's model for rows of float probability tables (every entry gets a nonzero share)."""
    import constriction

    return constriction.stream.model.Categorical(perfect=False)


@lru_cache(maxsize=1)
def _uniform():
    import constriction

    return constriction.stream.model.Uniform()


def _next_pow2(x: torch.Tensor) -> torch.Tensor:
    """Smallest power of two >= x for int64 x >= 1."""
    return torch.pow(2, torch.ceil(torch.log2(x.to(torch.float64))).to(torch.int64))


def plan_windows(w: torch.Tensor, mu: torch.Tensor, s: torch.Tensor, bits: int, low: int = 0,
                 component_sum=lambda t: t.sum(-1), log=torch.log, next_pow2=_next_pow2):
    """Focus windows of M subpixels inside the alphabet [low, 2^bits).

    Args:
        w, mu, s: (M, K) float32 mixture weights, means and scales in symbol units.
        low: smallest symbol (0, or 1 after a clear zero flag).
        component_sum, log, next_pow2: the sum over components, ln and next power of two;
            portable arithmetic (:func:`hpac.exact.plan_windows`) passes its own.
    Returns:
        lo, delta, width: (M,) int64 window start, bin size, number of bins.
    """
    top = (1 << bits) - 1
    centre = component_sum(w * mu).clamp(low, top)
    tail = log(w * (1.0 / ESCAPE_MASS))
    reach = torch.where(tail > 0, (mu - centre[:, None]).abs() + tail * s, torch.zeros_like(s)).amax(-1)
    need = torch.ceil(2 * reach + 1).clamp(1, 1 << bits).to(torch.int64)
    delta = next_pow2(torch.div(need + MAX_BINS - 1, MAX_BINS, rounding_mode="floor"))
    width = next_pow2(torch.div(need + delta - 1, delta, rounding_mode="floor")).clamp(MIN_BINS, MAX_BINS)
    width = torch.minimum(width, ((1 << bits) - low) // delta)
    start = torch.div(centre.to(torch.int64), delta, rounding_mode="floor") - width // 2
    lo = (start * delta).clamp(min=low)
    lo = torch.minimum(lo, (1 << bits) - width * delta)
    return lo, delta, width


def mass_below(low: int, w: torch.Tensor, mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(n,) float32 mixture mass below symbol ``low`` (the CDF at low - 1/2); w, mu, s (n, K) in symbol units."""
    return ((low - 0.5 - mu) * s.reciprocal()).sigmoid_().mul_(w).sum(1)


def symbol_units(logits: torch.Tensor, mean_n: torch.Tensor, log_s: torch.Tensor, bits: int):
    """Normalised mixture parameters (M, K) -> weights, means and scales in symbol units."""
    half = ((1 << bits) - 1) / 2.0
    return torch.softmax(logits, dim=-1), (mean_n + 1.0) * half, torch.exp(log_s) * half


@lru_cache(maxsize=64)
def _edges(n_bins: int) -> torch.Tensor:
    return torch.arange(n_bins + 1, dtype=torch.float32)[None, None, :]


# ---- float32 arithmetic, numpy where rounding is exact (same values as the torch originals) ----

def _units(logits: torch.Tensor, mean_n: torch.Tensor, log_s: torch.Tensor, bits: int):
    """:func:`symbol_units` as (M, K) float32 numpy arrays, bit for bit."""
    half = np.float32(((1 << bits) - 1) / 2.0)  # exact in float32 for bits <= 16
    return (torch.softmax(logits, dim=-1).numpy(), (mean_n.numpy() + np.float32(1.0)) * half,
            torch.exp(log_s).numpy() * half)


def _next_pow2_np(x: np.ndarray) -> np.ndarray:
    """Smallest power of two >= x for int64 x >= 1 (from the float's exponent: exact)."""
    _, e = np.frexp((x - 1).astype(np.float64))
    return np.where(x <= 1, 1, np.left_shift(1, e.astype(np.int64)))


def _windows(w: np.ndarray, mu: np.ndarray, s: np.ndarray, bits: int, low: int = 0):
    """:func:`plan_windows` on numpy float32 rows, bit for bit; numpy int64 lo, delta, width."""
    top = (1 << bits) - 1
    centre = np.clip(torch.from_numpy(w * mu).sum(-1).numpy(), np.float32(low), np.float32(top))
    tail = torch.log(torch.from_numpy(w * np.float32(1.0 / ESCAPE_MASS))).numpy()
    reach = np.where(tail > 0, np.abs(mu - centre[:, None]) + tail * s, np.float32(0.0)).max(-1)
    need = np.clip(np.ceil(2 * reach + 1), 1, 1 << bits).astype(np.int64)
    delta = _next_pow2_np((need + MAX_BINS - 1) // MAX_BINS)
    width = np.clip(_next_pow2_np((need + delta - 1) // delta), MIN_BINS, MAX_BINS)
    width = np.minimum(width, ((1 << bits) - low) // delta)
    start = centre.astype(np.int64) // delta - width // 2
    lo = np.minimum(np.maximum(start * delta, low), (1 << bits) - width * delta)
    return lo, delta, width


def _masses(start: np.ndarray, step: np.ndarray | int, n_bins: int, bits: int, w: np.ndarray,
            mu: np.ndarray, s: np.ndarray, escape: bool, low: int = 0) -> np.ndarray:
    """Mixture mass of ``n_bins`` bins [start + j*step, start + (j+1)*step) per row.

    The values of every release's all-torch original (tests/test_determinism.py keeps it as
    the oracle and compares them bit for bit).

    Args:
        start: (n,) int64 first symbol; step: (n,) int64 bin sizes, or 1 for all rows;
        w, mu, s: (n, K) float32 mixture in symbol units.
        escape: append a column with all mass outside the bins.
        low: smallest symbol; with low = 1 the mass below symbol 1 belongs to no entry.
    Returns:
        (n, n_bins [+1]) float32 table. The first/last bin take the tail below 0 / above
        2^bits - 1 when they touch the alphabet ends (the first bin only where low = 0).
        float32 keeps lower-tail masses exact; upper-tail masses below ~1e-7 round to 0 and
        get constriction's minimum probability.
    """
    inv = np.float32(1.0) / s
    a = (start.astype(np.float32)[:, None] - np.float32(0.5) - mu) * inv  # z at the first edge, (n, K)
    b = inv if isinstance(step, int) else step.astype(np.float32)[:, None] * inv  # z increment per bin
    # (n, K, E) layout: the mixture sum runs over a non-inner axis and vectorises over edges
    cdf = torch.addcmul(torch.from_numpy(a)[:, :, None], _edges(n_bins), torch.from_numpy(b)[:, :, None])
    big = cdf.sigmoid_().mul_(torch.from_numpy(w)[:, :, None]).sum(1).numpy()  # mixture CDF at the edges
    if low == 0:
        big[start <= 0, 0] = 0.0
    big[start + n_bins * step >= (1 << bits), -1] = 1.0
    below_low = mass_below(low, *map(torch.from_numpy, (w, mu, s))).numpy() if escape and low != 0 else None
    return cdf_to_table(big, escape, low, below_low, lambda t: t.sum(1))


def cdf_to_table(big: np.ndarray, escape: bool, low: int, below_low: np.ndarray | None, row_sums) -> np.ndarray:
    """(n, E) float32 mixture CDF at the bin edges (ends already pinned) -> (n, E - 1 [+1])
    float32 table: the bins' masses, then the escape column (the mass outside them, less
    ``below_low``, the mass below ``low``, where low = 1). ``row_sums``: (n, E) tensor -> (n,)
    in the arithmetic's own order, for the rows of the low = 1 alphabet."""
    n_bins = big.shape[1] - 1
    out = np.empty((big.shape[0], n_bins + int(escape)), np.float32)
    np.subtract(big[:, 1:], big[:, :-1], out=out[:, :n_bins])
    if escape:
        below = big[:, 0] if below_low is None else big[:, 0] - below_low
        out[:, n_bins] = below + (np.float32(1.0) - big[:, -1])
    # floor: a row whose mass all underflowed (a far-tail bin) must stay normalisable
    np.maximum(out, np.float32(1e-30), out=out)
    if low != 0:  # rows hold 1 - P(x < low), which can be tiny; constriction refused such rows
        out /= row_sums(torch.from_numpy(out)).numpy()[:, None]  # that it takes once they sum to 1
    return out


def _tables(start: np.ndarray, step: np.ndarray | int, n_bins: np.ndarray, bits: int, w: np.ndarray,
            mu: np.ndarray, s: np.ndarray, escape: bool, low: int = 0):
    """Yield (first, end, table) per run of equal ``n_bins`` (ascending) of float32 rows: one
    :func:`_masses` call per run, on exactly the bucket tensors the stream's tables come from."""
    for first, end in _runs(n_bins):
        yield first, end, _masses(start[first:end], step if isinstance(step, int) else step[first:end],
                                  int(n_bins[first]), bits, w[first:end], mu[first:end], s[first:end], escape, low)


class Arithmetic(NamedTuple):
    """How AFC's windows and tables are computed. ``units`` and ``windows`` take (M, K) rows in
    the arithmetic's own array type (windows come back as numpy int64); ``take`` gathers rows;
    ``tables`` yields (first, end, float32 table) per run of equal bin counts, like
    :func:`_tables`; ``exact``: row sums in index order when flooring."""

    units: Callable
    windows: Callable
    tables: Callable
    take: Callable
    exact: bool


@lru_cache(maxsize=2)
def arithmetic(exact: bool = False) -> Arithmetic:
    """float32 (numpy and torch), or portable (``exact``, format version 7, :mod:`hpac.exact`)."""
    if exact:
        from . import exact as ex

        return Arithmetic(ex.symbol_units, lambda *args: tuple(t.numpy() for t in ex.plan_windows(*args)),
                          ex.tables, lambda t, idx: t[torch.from_numpy(idx)], True)
    return Arithmetic(_units, _windows, _tables, lambda a, idx: a[idx], False)


def _runs(keys: np.ndarray):
    """(first, end) of each run of equal values in ``keys``."""
    cuts = (np.flatnonzero(keys[1:] != keys[:-1]) + 1).tolist()
    return zip([0] + cuts, cuts + [keys.size])


def _code_runs(coder, tables, values: np.ndarray, encoding: bool, floored: bool, exact: bool) -> None:
    """Range-code (n,) int32 ``values`` run by run under the (first, end, table) runs of
    ``tables``; decoding writes them into ``values``."""
    for first, end, probs in tables:
        probs = floor_tables(probs, exact) if floored else probs
        if encoding:
            coder.encode(values[first:end], categorical(), probs)
        else:
            values[first:end] = coder.decode(categorical(), probs)


def code_symbols(coder, logits: torch.Tensor, mean_n: torch.Tensor, log_s: torch.Tensor, bits: int,
                 sym: torch.Tensor | None = None, floored: bool = False, low: int = 0,
                 exact: bool = False) -> torch.Tensor:
    """Encode (``sym`` given) or decode M subpixels with one mixture each.

    Args:
        coder: constriction RangeEncoder (encode) or RangeDecoder (decode).
        logits, mean_n, log_s: (M, K) mixture parameters, normalised domain.
        sym: (M,) int64 symbols to encode, or None to decode.
        floored: raise every table entry to at least TABLE_FLOOR of its row's total (format
            version 5 or 6's option, see :func:`floor_tables`).
        low: smallest symbol (1: code the mixture conditioned on ``x != 0``).
        exact: portable arithmetic (:mod:`hpac.exact`; float64 parameters).
    Returns:
        (M,) int64 symbols (the input when encoding).
    """
    m = logits.shape[0]
    encoding = sym is not None
    if m == 0:
        return sym if encoding else torch.zeros(0, dtype=torch.int64)
    ar = arithmetic(exact)
    w, mu, s = ar.units(logits, mean_n, log_s, bits)
    lo, delta, width = ar.windows(w, mu, s, bits, low)
    sy = sym.numpy() if encoding else None

    # stage 1: bin index or ESCAPE, bucketed by window width; one stable sort makes every
    # bucket a run (rows keep their index order inside it)
    order = np.argsort(width, kind="stable")
    if encoding:
        coarse = np.where((sy >= lo) & (sy < lo + width * delta), (sy - lo) // delta, width)
        coarse_o = coarse[order].astype(np.int32)
    else:
        coarse_o = np.empty(m, np.int32)
    tables = ar.tables(lo[order], delta[order], width[order], bits, ar.take(w, order), ar.take(mu, order),
                       ar.take(s, order), escape=True, low=low)
    _code_runs(coder, tables, coarse_o, encoding, floored, ar.exact)
    if not encoding:
        coarse = np.empty(m, np.int64)
        coarse[order] = coarse_o
    escaped = coarse == width
    bin_lo = lo + coarse * delta

    # stage 2: offset inside the bin, exact conditional, bucketed by bin size
    offset = (sy - bin_lo) if encoding else np.zeros(m, np.int64)
    fine = np.flatnonzero((~escaped) & (delta > 1))
    if fine.size:
        fine = fine[np.argsort(delta[fine], kind="stable")]
        off = offset[fine].astype(np.int32) if encoding else np.empty(fine.size, np.int32)
        tables = ar.tables(bin_lo[fine], 1, delta[fine], bits, ar.take(w, fine), ar.take(mu, fine),
                           ar.take(s, fine), escape=False)
        _code_runs(coder, tables, off, encoding, floored, ar.exact)
        if not encoding:
            offset[fine] = off

    # escapes: uniform over the whole alphabet
    esc = np.flatnonzero(escaped)
    if esc.size:
        sizes = np.full(esc.size, 1 << bits, dtype=np.int32)
        if encoding:
            coder.encode(sy[esc].astype(np.int32), _uniform(), sizes)
        else:
            vals = coder.decode(_uniform(), sizes)
    if encoding:
        return sym
    out = bin_lo + offset
    if esc.size:
        out[esc] = vals
    return torch.from_numpy(out)
