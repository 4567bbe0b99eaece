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
"""
from __future__ import annotations

from functools import lru_cache

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


def _bin_masses(start: torch.Tensor, step: torch.Tensor | int, n_bins: int, bits: int, w: torch.Tensor,
                mu: torch.Tensor, s: torch.Tensor, escape: bool, low: int = 0) -> np.ndarray:
    """Mixture mass of ``n_bins`` bins [start + j*step, start + (j+1)*step) per row.

    Args:
        start: (n,) int64 first symbol; step: (n,) int64 bin sizes, or 1 for all rows;
        w, mu, s: (n, K) mixture.
        escape: append a column with all mass outside the bins.
        low: smallest symbol; with low = 1 the mass below symbol 1 belongs to no entry.
    Returns:
        (n, n_bins [+1]) float32 table. The first/last bin take the tail below 0 / above
        2^bits - 1 when they touch the alphabet ends (the first bin only where low = 0).
        float32 keeps lower-tail masses exact; upper-tail masses below ~1e-7 round to 0 and
        get constriction's minimum probability.
    """
    unit_step = isinstance(step, int)
    inv = s.reciprocal()
    a = (start.to(torch.float32)[:, None] - 0.5 - mu).mul_(inv)  # z at the first edge, (n, K)
    b = inv if unit_step else step.to(torch.float32)[:, None] * inv  # z increment per bin
    # (n, K, E) layout: the mixture sum runs over a non-inner axis and vectorises over edges
    cdf = torch.addcmul(a[:, :, None], _edges(n_bins), b[:, :, None]).sigmoid_().mul_(w[:, :, None])
    big = cdf.sum(1)  # mixture CDF at the edges, (n, E)
    if low == 0:
        big[:, 0].masked_fill_(start <= 0, 0.0)
    big[:, -1].masked_fill_(start + n_bins * step >= (1 << bits), 1.0)
    out = torch.empty(big.shape[0], n_bins + int(escape))
    torch.sub(big[:, 1:], big[:, :-1], out=out[:, :n_bins])
    if escape:
        below = big[:, 0] if low == 0 else big[:, 0] - mass_below(low, w, mu, s)
        out[:, n_bins] = below + (1.0 - big[:, -1])
    # floor: a row whose mass all underflowed (a far-tail bin) must stay normalisable
    out.clamp_(min=1e-30)
    if low != 0:  # rows hold 1 - P(x < low), which can be tiny; constriction refused such rows
        out.div_(out.sum(1, keepdim=True))  # that it takes once they sum to 1
    return out.numpy()


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
    if exact:
        from . import exact as ex

        units, windows, masses = ex.symbol_units, ex.plan_windows, ex.bin_masses
    else:
        units, windows, masses = symbol_units, plan_windows, _bin_masses
    w, mu, s = units(logits, mean_n, log_s, bits)
    lo, delta, width = windows(w, mu, s, bits, low)

    # stage 1: bin index or ESCAPE, bucketed by window width
    if encoding:
        inside = (sym >= lo) & (sym < lo + width * delta)
        coarse = torch.where(inside, torch.div(sym - lo, delta, rounding_mode="floor"), width)
    else:
        coarse = torch.empty(m, dtype=torch.int64)
    # one stable sort makes every bucket a slice (rows keep their index order inside it)
    order = torch.argsort(width, stable=True)
    widths, counts = torch.unique_consecutive(width[order], return_counts=True)
    lo_o, delta_o, w_o, mu_o, s_o = lo[order], delta[order], w[order], mu[order], s[order]
    coarse_o = coarse[order] if encoding else torch.empty(m, dtype=torch.int64)
    start = 0
    for wb, cnt in zip(widths.tolist(), counts.tolist()):
        sl = slice(start, start + cnt)
        start += cnt
        probs = masses(lo_o[sl], delta_o[sl], wb, bits, w_o[sl], mu_o[sl], s_o[sl], escape=True, low=low)
        probs = floor_tables(probs, exact) if floored else probs
        if encoding:
            coder.encode(coarse_o[sl].to(torch.int32).numpy(), categorical(), probs)
        else:
            coarse_o[sl] = torch.from_numpy(coder.decode(categorical(), probs).astype(np.int64))
    if not encoding:
        coarse[order] = coarse_o
    escaped = coarse == width
    bin_lo = lo + coarse * delta

    # stage 2: offset inside the bin, exact conditional, bucketed by bin size
    offset = (sym - bin_lo) if encoding else torch.zeros(m, dtype=torch.int64)
    fine = (~escaped) & (delta > 1)
    for db in torch.unique(delta[fine]).tolist():
        idx = torch.nonzero(fine & (delta == db)).squeeze(1)
        probs = masses(bin_lo[idx], 1, db, bits, w[idx], mu[idx], s[idx], escape=False)
        probs = floor_tables(probs, exact) if floored else probs
        if encoding:
            coder.encode(offset[idx].to(torch.int32).numpy(), categorical(), probs)
        else:
            offset[idx] = torch.from_numpy(coder.decode(categorical(), probs).astype(np.int64))

    # escapes: uniform over the whole alphabet
    esc = torch.nonzero(escaped).squeeze(1)
    if esc.numel():
        sizes = np.full(esc.numel(), 1 << bits, dtype=np.int32)
        if encoding:
            coder.encode(sym[esc].to(torch.int32).numpy(), _uniform(), sizes)
        else:
            vals = torch.from_numpy(coder.decode(_uniform(), sizes).astype(np.int64))
    if encoding:
        return sym
    out = bin_lo + offset
    if esc.numel():
        out[esc] = vals
    return out
