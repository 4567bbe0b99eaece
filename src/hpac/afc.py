"""AFC (Adaptive Focus Coding): mixture -> range-coded symbols without full-alphabet CDFs.

For every subpixel the mixture is turned into a *focus window* around its centre:

* ``reach`` = max over components with weight > 1e-3 of ``|mu_k - centre| + TAIL * s_k``;
* the window is ``width`` bins of ``delta`` symbols (both powers of two,
  ``MIN_BINS <= width <= MAX_BINS``), the smallest that covers ``centre +- reach``, aligned to
  ``delta`` and clipped into ``[0, 2^bits)``;
* stage 1 codes the bin index with a categorical over ``width`` bins plus one ESCAPE entry
  holding all mass outside the window;
* stage 2 (only where ``delta > 1``) codes the offset inside the bin with the mixture's exact
  conditional distribution over the ``delta`` symbols of that bin;
* an escaped value is coded uniformly over ``[0, 2^bits)``.

So an 8-bit subpixel costs at most ``(MAX_BINS + 1) * K`` logistic evaluations, and a 16-bit
one ``(MAX_BINS + delta + 2) * K``, never a 65,536-entry table. Stream order inside one call:
stage-1 buckets by ascending width, stage-2 buckets by ascending delta, then escapes.
Encoder and decoder call :func:`code_symbols` with identical float inputs, so every table is
identical on both sides; constriction turns each table into exact fixed-point frequencies,
giving every entry a nonzero probability.
"""
from __future__ import annotations

import numpy as np
import torch

TAIL = 10.0  # window half-width in units of the component scale (logistic tail ~ 2 e^-10)
MIN_BINS = 4
MAX_BINS = 256


def _categorical():
    import constriction

    return constriction.stream.model.Categorical(perfect=False)


def _uniform():
    import constriction

    return constriction.stream.model.Uniform()


def _next_pow2(x: torch.Tensor) -> torch.Tensor:
    """Smallest power of two >= x for int64 x >= 1."""
    return torch.pow(2, torch.ceil(torch.log2(x.to(torch.float64))).to(torch.int64))


def plan_windows(w: torch.Tensor, mu: torch.Tensor, s: torch.Tensor, bits: int):
    """Focus windows of M subpixels.

    Args:
        w, mu, s: (M, K) float32 mixture weights, means and scales in symbol units.
    Returns:
        lo, delta, width: (M,) int64 window start, bin size, number of bins.
    """
    top = (1 << bits) - 1
    centre = (w * mu).sum(-1).clamp(0, top)
    reach = torch.where(w > 1e-3, (mu - centre[:, None]).abs() + TAIL * s, torch.zeros_like(s)).amax(-1)
    need = torch.ceil(2 * reach + 1).clamp(1, 1 << bits).to(torch.int64)
    delta = _next_pow2(torch.div(need + MAX_BINS - 1, MAX_BINS, rounding_mode="floor"))
    width = _next_pow2(torch.div(need + delta - 1, delta, rounding_mode="floor")).clamp(MIN_BINS, MAX_BINS)
    width = torch.minimum(width, (1 << bits) // delta)
    start = torch.div(centre.to(torch.int64), delta, rounding_mode="floor") - width // 2
    lo = (start * delta).clamp(min=0)
    lo = torch.minimum(lo, (1 << bits) - width * delta)
    return lo, delta, width


def _bin_masses(start: torch.Tensor, step: torch.Tensor, n_bins: int, bits: int, w: torch.Tensor,
                mu: torch.Tensor, s: torch.Tensor, escape: bool) -> np.ndarray:
    """Mixture mass of ``n_bins`` bins [start + j*step, start + (j+1)*step) per row.

    Args:
        start, step: (n,) int64 first symbol and bin size; w, mu, s: (n, K) mixture.
        escape: append a column with all mass outside the bins.
    Returns:
        (n, n_bins [+1]) float32 table. The first/last bin take the tail below 0 / above
        2^bits - 1 when they touch the alphabet ends. float32 keeps lower-tail masses exact;
        upper-tail masses below ~1e-7 round to 0 and get constriction's minimum probability.
    """
    inv = 1.0 / s
    a = (start[:, None].to(torch.float32) - 0.5 - mu) * inv  # z at the first edge, (n, K)
    b = step[:, None].to(torch.float32) * inv  # z increment per bin
    j = torch.arange(n_bins + 1, dtype=torch.float32)[None, None, :]
    # (n, K, E) layout: the mixture sum runs over a non-inner axis and vectorises over edges
    cdf = torch.addcmul(a[:, :, None], j, b[:, :, None]).sigmoid_().mul_(w[:, :, None])
    big = cdf.sum(1)  # mixture CDF at the edges, (n, E)
    big[:, 0] = torch.where(start <= 0, 0.0, big[:, 0])
    big[:, -1] = torch.where(start + n_bins * step >= (1 << bits), 1.0, big[:, -1])
    out = big[:, 1:] - big[:, :-1]
    if escape:
        out = torch.cat([out, big[:, :1] + (1.0 - big[:, -1:])], dim=1)
    # floor: a row whose mass all underflowed (a far-tail bin) must stay normalisable
    return np.ascontiguousarray(out.clamp(min=1e-30).numpy(), dtype=np.float32)


def code_symbols(coder, logits: torch.Tensor, mean_n: torch.Tensor, log_s: torch.Tensor, bits: int,
                 sym: torch.Tensor | None = None) -> torch.Tensor:
    """Encode (``sym`` given) or decode M subpixels with one mixture each.

    Args:
        coder: constriction RangeEncoder (encode) or RangeDecoder (decode).
        logits, mean_n, log_s: (M, K) mixture parameters, normalised domain.
        sym: (M,) int64 symbols to encode, or None to decode.
    Returns:
        (M,) int64 symbols (the input when encoding).
    """
    m = logits.shape[0]
    encoding = sym is not None
    if m == 0:
        return sym if encoding else torch.zeros(0, dtype=torch.int64)
    half = ((1 << bits) - 1) / 2.0
    w = torch.softmax(logits, dim=-1)
    mu = (mean_n + 1.0) * half
    s = torch.exp(log_s) * half
    lo, delta, width = plan_windows(w, mu, s, bits)

    # stage 1: bin index or ESCAPE, bucketed by window width
    if encoding:
        inside = (sym >= lo) & (sym < lo + width * delta)
        coarse = torch.where(inside, torch.div(sym - lo, delta, rounding_mode="floor"), width)
    else:
        coarse = torch.empty(m, dtype=torch.int64)
    for wb in torch.unique(width).tolist():
        idx = torch.nonzero(width == wb).squeeze(1)
        probs = _bin_masses(lo[idx], delta[idx], wb, bits, w[idx], mu[idx], s[idx], escape=True)
        if encoding:
            coder.encode(coarse[idx].to(torch.int32).numpy(), _categorical(), probs)
        else:
            coarse[idx] = torch.from_numpy(coder.decode(_categorical(), probs).astype(np.int64))
    escaped = coarse == width
    bin_lo = lo + coarse * delta

    # stage 2: offset inside the bin, exact conditional, bucketed by bin size
    offset = (sym - bin_lo) if encoding else torch.zeros(m, dtype=torch.int64)
    fine = (~escaped) & (delta > 1)
    for db in torch.unique(delta[fine]).tolist():
        idx = torch.nonzero(fine & (delta == db)).squeeze(1)
        probs = _bin_masses(bin_lo[idx], torch.ones_like(idx), db, bits, w[idx], mu[idx], s[idx], escape=False)
        if encoding:
            coder.encode(offset[idx].to(torch.int32).numpy(), _categorical(), probs)
        else:
            offset[idx] = torch.from_numpy(coder.decode(_categorical(), probs).astype(np.int64))

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
