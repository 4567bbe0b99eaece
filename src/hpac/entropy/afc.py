"""AFC (Adaptive Focus Coding, HPAC: Li, Bai et al. 2025): integer mixtures -> focus windows ->
range-coded symbols.

For every subpixel the mixture is turned into a *focus window* around its centre: ``width``
bins of ``delta`` symbols (powers of two, MIN_BINS <= width <= MAX_BINS) covering the
centre +- the weight-aware reach (a component of weight w reaches ln(w / ESCAPE_MASS) scales
out; weaker ones do not widen the window). Stage 1 codes the bin index with a categorical
over ``width`` bins plus one ESCAPE entry holding all mass outside the window; stage 2 (only
where delta > 1) the offset inside the bin with the mixture's conditional over its delta
symbols; an escaped value is coded uniformly over [0, 2^bits). With ``low = 1`` (a subpixel
whose zero flag said "not 0", :mod:`hpac.entropy.zeroflags`) the alphabet is [1, 2^bits): the mass
below symbol 1 belongs to no entry. Stream order inside one call: stage-1 buckets by ascending
width, stage-2 buckets by ascending delta, then escapes.

Everything is integer arithmetic (numba kernels over int64), so every machine builds the same
tables from the integer network's output (:mod:`hpac.nn.integer`)::

    w_k    weights in 2^-W_BITS:  e_k = EXPW[min((Lmax - L_k) >> 4, 4096)],  w_k = (e_k << 16) // sum e
    mu_k   means in symbols, 2^-MU_FRAC
    S_k    scales in symbols, 2^-MU_FRAC: max(S_MIN, (EXPS[(LS_k + 16 2^12) >> 4] (2^b - 1)) >> 28)
    sigma  at an edge t (2^-MU_FRAC): zf = (clip(t - mu_k, +-17 S_k) (2^40 // S_k)) >> 24, clamped to +-16 2^16,
           sigma_k = SIG[i] + ((SIG[i+1] - SIG[i]) (zf & 255) >> 8), i = (zf >> 8) + 4096
    CDF(t) = sum_k w_k sigma_k, in 2^-(W_BITS + 30); the mixture's total is sum_k w_k 2^30

Tables (exactly specified: 50-digit decimal arithmetic, round half even)::

    EXPW[i] = round(2^16 exp(-i / 256))            i = 0 .. 4096
    EXPS[j] = round(2^40 exp(-16 + j / 256))       j = 0 .. 5120   (log-scales -16 .. 4)
    SIG[i]  = round(2^30 / (1 + exp(-(i - 4096) / 256)))   i = 0 .. 8192
    LNW[i]  = round(256 ln(16 max(i, 1) / (ESCAPE_MASS 2^16)))   i = 0 .. 4096

Windows on these integers: centre = clamp((sum w_k mu_k) >> 16), reach = max over components with LNW[w_k >> 4] > 0 of
|mu_k - centre| + (LNW[w_k >> 4] S_k >> 8), need = ceil(2 reach + 1) symbols. Table entries
(version 10) are differences of the edge CDFs >> TABLE_SHIFT, plus 1 (versions 8 and 9: the
masses between edges >> TABLE_SHIFT, at least 1), handed to constriction as float32 (exact:
below 2^24; constriction's quantisation of them is deterministic Rust).
"""
from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from functools import lru_cache

import numpy as np
from numba import njit

ESCAPE_MASS = 3e-4  # per component and side. Measured on dev crops (float AFC, session 9): escapes
# cost <= 0.002 bits a subpixel; 1e-4 widened tables by 12-19%, 1e-3 cost up to 0.008 bits
MIN_BINS = 4
MAX_BINS = 256
TABLE_SHIFT = 23  # table entries: masses in 2^-46 >> 23, so a row sums to about 2^23: float32
# holds every entry and constriction's running sums of them exactly
TABLE_FLOOR = 2.0**-12  # floored tables (a file's option): least share of a row's total any entry gets


def floor_tables(probs: np.ndarray) -> np.ndarray:
    """(n, E) float32 tables with every entry raised to TABLE_FLOOR of its row's total (summed
    in index order). The encoder falls back to floored tables, and says so in the file, if
    constriction ever refuses a table of the normal coding."""
    total = np.add.accumulate(probs, axis=1, dtype=np.float32)[:, -1:]
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


W_BITS = 16
MU_FRAC = 13  # means, scales and edges in 2^-13 symbols
S_MIN = 1 << 7  # 1/64 symbol: narrower logistics are steps at the table's resolution
SIG_BITS = 30
Z_LIMIT = 16 << 16


def _round(x: Decimal) -> int:
    return int(x.to_integral_value(ROUND_HALF_EVEN))


@lru_cache(maxsize=1)
def constants() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(EXPW, EXPS, SIG, LNW) int64, from their definitions (module docstring).

    Consecutive entries step by e^(+-1/256): the exponentials are one exp each and products
    after that, in 60-digit arithmetic (relative error below 1e-55 after 8192 products, so
    every rounding is that of the definition; tests/test_reference.py recomputes each entry
    directly). About 0.03 s instead of 0.5 s per process."""
    with localcontext() as ctx:
        ctx.prec = 60
        down = (-Decimal(1) / 256).exp()
        expw, x = [], Decimal(1 << 16)
        for _ in range(4097):
            expw.append(_round(x))
            x *= down
        exps, x = [], Decimal(1 << 40) * Decimal(-16).exp()
        up = 1 / down
        for _ in range(5121):
            exps.append(_round(x))
            x *= up
        sig, e = [], Decimal(16).exp()  # e^(-(i - 4096) / 256) at i = 0
        for _ in range(8193):
            sig.append(_round(Decimal(1 << SIG_BITS) / (1 + e)))
            e *= down
    return (*(np.array(t, dtype=np.int64) for t in (expw, exps, sig)), tail_table(ESCAPE_MASS))


def tail_table(escape_mass: float) -> np.ndarray:
    """LNW (4097,) int64: round(256 ln(16 max(i, 1) / (escape_mass 2^16))), how many scales a
    component of weight 16 i / 2^16 reaches out (the double escape_mass taken exactly).

    One ln, then the rounding boundaries e^((L + 1/2) / 256) by products: LNW[i] is the
    smallest L with 16 i / (escape_mass 2^16) below its boundary."""
    with localcontext() as ctx:
        ctx.prec = 60
        c = Decimal(16) / (Decimal(escape_mass) * Decimal(1 << 16))
        level = _round(Decimal(256) * c.ln())  # i = 0 and 1
        step = (Decimal(1) / 256).exp()
        bound = ((Decimal(level) + Decimal("0.5")) / 256).exp()
        out = []
        for i in range(4097):
            while c * max(i, 1) >= bound:
                level += 1
                bound *= step
            out.append(level)
        return np.array(out, np.int64)


@njit(cache=True)
def mixture_row(logits, ls, bits, expw, exps, w, s):
    """One mixture: integer logits and log-scales (K,) on 2^-12 (normalised units) -> weights
    w (2^-16) and scales s (2^-13 symbols), written into w, s (K,) int64."""
    k = logits.shape[0]
    top = logits[0]
    for j in range(1, k):
        top = max(top, logits[j])
    total = 0
    for j in range(k):
        w[j] = expw[min((top - logits[j]) >> 4, 4096)]
        total += w[j]
    for j in range(k):
        w[j] = (w[j] << W_BITS) // total
        i = min(max((ls[j] + (16 << 12)) >> 4, 0), 5120)
        s[j] = max((exps[i] * ((1 << bits) - 1)) >> 28, S_MIN)


@njit(cache=True)
def _mixture_rows(logits, ls, bits, expw, exps):
    w = np.empty(logits.shape, np.int64)
    s = np.empty(logits.shape, np.int64)
    for r in range(logits.shape[0]):
        mixture_row(logits[r], ls[r], bits, expw, exps, w[r], s[r])
    return w, s


def mixture(logits: np.ndarray, ls: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer logits and log-scales (M, K) on 2^-12 (normalised units) -> weights w (2^-16)
    and scales S (2^-13 symbols), (M, K) int64."""
    expw, exps, _, _ = constants()
    return _mixture_rows(np.ascontiguousarray(logits, np.int64), np.ascontiguousarray(ls, np.int64), bits, expw, exps)


@njit(cache=True)
def _next_pow2(x):
    p = 1
    while p < x:
        p <<= 1
    return p


@njit(cache=True)
def _windows(w, mu, s, lnw, bits, low):
    m, k = w.shape
    lo = np.empty(m, np.int64)
    delta = np.empty(m, np.int64)
    width = np.empty(m, np.int64)
    one = 1 << MU_FRAC
    for r in range(m):
        acc = 0
        for j in range(k):
            acc += w[r, j] * mu[r, j]
        centre = min(max(acc >> W_BITS, low * one), ((1 << bits) - 1) * one)
        reach = 0
        for j in range(k):
            t = lnw[w[r, j] >> 4]
            if t > 0:
                reach = max(reach, abs(mu[r, j] - centre) + ((t * s[r, j]) >> 8))
        need = min(max((2 * reach + 2 * one - 1) >> MU_FRAC, 1), 1 << bits)
        dl = _next_pow2((need + MAX_BINS - 1) // MAX_BINS)
        wd = min(max(_next_pow2((need + dl - 1) // dl), MIN_BINS), MAX_BINS)
        wd = min(wd, ((1 << bits) - low) // dl)
        start = (centre >> MU_FRAC) // dl - wd // 2
        lo[r] = min(max(start * dl, low), (1 << bits) - wd * dl)
        delta[r], width[r] = dl, wd
    return lo, delta, width


def windows(w: np.ndarray, mu: np.ndarray, s: np.ndarray, bits: int, low: int = 0, tails: np.ndarray | None = None):
    """Focus windows (lo, delta, width) (M,) int64 of integer mixtures (w, mu, s) (M, K);
    ``tails``: another LNW table (:func:`tail_table`), for measuring other escape masses."""
    return _windows(w, mu, s, constants()[3] if tails is None else tails, bits, low)


@njit(cache=True, inline="always")
def _add_logistic(o, t0, big, wj, mj, sj, sig):
    """o[e] += wj sigma(t0 + e big) for every e < len(o): one logistic's CDF (2^-30) at evenly
    spaced edges (2^-13 symbols, big > 0).

    sigma(t): d = clip(t - mj, +-17 sj), zf = clip((d (2^40 // sj)) >> 24, -Z_LIMIT, Z_LIMIT - 1),
    i = (zf >> 8) + 4096, SIG[i] + ((SIG[i + 1] - SIG[i]) (zf & 255) >> 8). Where |d| reaches
    17 sj, zf saturates (17 sj (2^40 // sj) >= 16 2^40 wherever 17 sj <= 2^40; the largest
    scale, EXPS[5120] (2^16 - 1) >> 28, is below 2^34), so the edges split into three runs:
    SIG at zf = -Z_LIMIT, the lookup, SIG at Z_LIMIT - 1. Only the middle run looks anything
    up: the same integers, a fraction of the work."""
    nb = o.shape[0]
    lim = 17 * sj
    d0 = t0 - mj
    ea = min(max((-lim - d0) // big + 1, 0), nb)  # first edge with d > -lim
    eb = min(max(-((d0 - lim) // big), ea), nb)  # first edge with d >= lim
    lo_run = wj * sig[0]
    hi_run = wj * _sigma_top(sig)
    for e in range(ea):
        o[e] += lo_run
    inv = (1 << 40) // sj
    for e in range(ea, eb):  # |d| < 17 sj here: |d inv| < 17 2^40, no overflow
        o[e] += wj * _sigma_inside(d0 + e * big, inv, sig)
    for e in range(eb, nb):
        o[e] += hi_run


@njit(cache=True, inline="always")
def _sigma_inside(d, inv, sig):
    """sigma (2^-30) at offset d = t - mj from a logistic's mean, where |d| < 17 sj (inv =
    2^40 // sj): the table lookup of :func:`_add_logistic`."""
    zf = min(max((d * inv) >> 24, -Z_LIMIT), Z_LIMIT - 1)
    i = (zf >> 8) + 4096
    lo = sig[i]
    return lo + (((sig[i + 1] - lo) * (zf & 255)) >> 8)


@njit(cache=True, inline="always")
def _sigma_top(sig):
    """sigma (2^-30) where zf saturates at Z_LIMIT - 1 (d >= 17 sj): the lookup at i = 8191, zf & 255 = 255."""
    return sig[8191] + (((sig[8192] - sig[8191]) * 255) >> 8)


@njit(cache=True, inline="always")
def _sigma_at(d, sj, inv, sig):
    """:func:`_add_logistic`'s sigma (2^-30) at one edge, offset d = t - mj (inv = 2^40 // sj):
    the saturated ends without a lookup, else :func:`_sigma_inside`."""
    if d <= -17 * sj:
        return sig[0]
    if d >= 17 * sj:
        return _sigma_top(sig)
    return _sigma_inside(d, inv, sig)


@njit(cache=True)
def _edge_cdfs(rows, start, step, n_bins, bits, w, mu, s, sig, low, escape):
    """CDFs (2^-46) at every bin edge of every table, ends pinned, flat; and per table the total
    mass less the mass below ``low`` (for the escape entry). Table i: bins start[i] + j step[i],
    j < n_bins[i], of mixture rows[i] of (w, mu, s) (read in place: no gathered copies)."""
    m, k = rows.shape[0], w.shape[1]
    out = np.zeros(int(np.sum(n_bins + 1)), np.int64)
    rest = np.zeros(m, np.int64)
    cdf = np.zeros(1, np.int64)
    pos = 0
    for i in range(m):
        r = rows[i]
        nb = n_bins[i]
        o = out[pos : pos + nb + 1]
        total = 0
        for j in range(k):
            if w[r, j] == 0:  # adds nothing
                continue
            total += w[r, j] << SIG_BITS
            _add_logistic(o, (2 * start[i] - 1) << (MU_FRAC - 1), step[i] << MU_FRAC, w[r, j], mu[r, j], s[r, j],
                          sig)
        if low == 0 and start[i] <= 0:
            o[0] = 0
        if start[i] + nb * step[i] >= (1 << bits):
            o[nb] = total
        if escape:
            below = _cdf_below(low, w, mu, s, sig, r, cdf) if low != 0 else 0
            rest[i] = (o[0] - below) + (total - o[nb])
        pos += nb + 1
    return out, rest


@njit(cache=True)
def _order_by(seg, v):
    """The stable order of rows by (seg, v): seg (n,) int64 ascending, v (n,) int64 >= 0 small
    (window widths, bin sizes: at most 2^16). A counting sort within each segment: linear,
    where a comparison sort of a batch cost more than its windows."""
    n = v.shape[0]
    out = np.empty(n, np.int64)
    if n == 0:
        return out
    count = np.zeros(int(v.max()) + 2, np.int64)
    a = 0
    while a < n:
        e = a
        while e < n and seg[e] == seg[a]:
            e += 1
        count[:] = 0
        for r in range(a, e):
            count[v[r] + 1] += 1
        for t in range(1, count.shape[0]):
            count[t] += count[t - 1]
        for r in range(a, e):
            out[a + count[v[r]]] = r
            count[v[r]] += 1
        a = e
    return out


@njit(cache=True, inline="always")
def _cdf_below(low, w, mu, s, sig, r, cdf):
    """Row r's mixture CDF (2^-46) at the edge low - 1/2: its mass below symbol ``low``
    (``cdf``: a (1,) int64 scratch)."""
    cdf[0] = 0
    for j in range(w.shape[1]):
        if w[r, j] != 0:
            _add_logistic(cdf, (2 * low - 1) << (MU_FRAC - 1), 1, w[r, j], mu[r, j], s[r, j], sig)
    return cdf[0]


def bin_tables(start: np.ndarray, step: np.ndarray, n_bins: np.ndarray, bits: int, w: np.ndarray, mu: np.ndarray,
               s: np.ndarray, escape: bool, low: int = 0, cdf_entries: bool = True):
    """Yield (first, end, float32 table) per run of equal ``n_bins`` (ascending) of rows:
    the masses of bins [start + j step, start + (j+1) step) (the first / last bin take the
    tail below 0 / above 2^bits - 1 where they touch the alphabet's ends, the first only where
    low = 0), then (``escape``) all mass outside the bins less the mass below ``low``; entries
    as :func:`_entries` makes them (``cdf_entries``: version 10's rule, else that of 8 and 9).

    Args:
        start, step, n_bins: (n,) int64; w, mu, s: (n, K) int64 integer mixtures.
    """
    cdfs, rest = _edge_cdfs(np.arange(w.shape[0]), start, step, n_bins, bits, w, mu, s, constants()[2], low, escape)
    yield from _split(_entries(cdfs, rest, n_bins, escape, cdf_entries), n_bins, escape)


@njit(cache=True)
def _coded_rows(rows, start, step, n_bins, idx, bits, w, mu, s, sig, low, escape):
    """The encoder's tables under version 10's entries (:func:`_entries` with ``cdf_entries``),
    flat in :func:`_entries`' layout, each row zero but where its coded index idx[i] (n_bins[i]:
    the escape) reads it: S at 0, e at idx, the rest of the bins at idx + 1.

    The range coder reads a table only through the prefix sums before and after the coded
    entry and the row's total (constriction's ``Categorical(perfect=False)`` gives entry j the
    quantised float prefix sum up to j plus j; every sum here is an integer below 2^24, exact in
    float32), so such a row codes the bytes of the decoder's full one. With entries
    (E_(j+1) >> 23) - (E_j >> 23) + 1, the prefix sum up to i is (E_i >> 23) - (E_0 >> 23) + i:
    four edge CDFs a row (the window's ends, the coded bin's edges) instead of n + 1.
    Floored tables raise every entry to a share of the row's total, so they need full rows."""
    m, k = rows.shape[0], w.shape[1]
    esc = 1 if escape else 0
    out = np.zeros(int(np.sum(n_bins)) + m * esc, np.float32)
    cdf = np.zeros(1, np.int64)
    pos = 0
    for i in range(m):
        r, nb, st, dl, c = rows[i], n_bins[i], start[i], step[i], idx[i]
        e0, en, ec, ec1 = 0, 0, 0, 0  # the CDF at edges 0, nb, c, c + 1
        total = 0
        t0 = (2 * st - 1) << (MU_FRAC - 1)
        for j in range(k):
            wj = w[r, j]
            if wj == 0:
                continue
            total += wj << SIG_BITS
            sj = s[r, j]
            inv = (1 << 40) // sj
            d0 = t0 - mu[r, j]
            e0 += wj * _sigma_at(d0, sj, inv, sig)
            en += wj * _sigma_at(d0 + ((nb * dl) << MU_FRAC), sj, inv, sig)
            if c < nb:
                ec += wj * _sigma_at(d0 + ((c * dl) << MU_FRAC), sj, inv, sig)
                ec1 += wj * _sigma_at(d0 + (((c + 1) * dl) << MU_FRAC), sj, inv, sig)
        if low == 0 and st <= 0:  # the ends pinned as _edge_cdfs pins them
            e0 = 0
        if st + nb * dl >= (1 << bits):
            en = total
        first = e0 >> TABLE_SHIFT
        bins = (en >> TABLE_SHIFT) - first + nb  # the bin entries' sum
        o = out[pos : pos + nb + esc]
        if c == nb:
            o[0] = bins
        else:
            lo_edge = e0 if c == 0 else ec
            hi_edge = en if c + 1 == nb else ec1
            before = (lo_edge >> TABLE_SHIFT) - first + c
            entry = (hi_edge >> TABLE_SHIFT) - (lo_edge >> TABLE_SHIFT) + 1
            o[0] += before
            o[c] += entry
            if c + 1 < nb:  # (at c + 1 = nb nothing of the bins is left)
                o[c + 1] += bins - before - entry
        if escape:
            below = _cdf_below(low, w, mu, s, sig, r, cdf) if low != 0 else 0
            o[nb] += max(((e0 - below) + (total - en)) >> TABLE_SHIFT, 1)
        pos += nb + esc
    return out


@njit(cache=True)
def _entries(cdfs, rest, n_bins, escape, cdf_entries):
    """Every row's table entries, flat float32: per bin (E_(j+1) >> TABLE_SHIFT) - (E_j >>
    TABLE_SHIFT) + 1 (``cdf_entries``, version 10) or max(1, (E_(j+1) - E_j) >> TABLE_SHIFT)
    (versions 8 and 9); then the escape entry, max(1, rest >> TABLE_SHIFT)."""
    out = np.empty(int(np.sum(n_bins)) + (n_bins.shape[0] if escape else 0), np.float32)
    pos, at = 0, 0
    for r in range(n_bins.shape[0]):
        nb = n_bins[r]
        for j in range(nb):
            if cdf_entries:
                out[pos + j] = (cdfs[at + j + 1] >> TABLE_SHIFT) - (cdfs[at + j] >> TABLE_SHIFT) + 1
            else:
                out[pos + j] = max((cdfs[at + j + 1] - cdfs[at + j]) >> TABLE_SHIFT, 1)
        pos += nb
        if escape:
            out[pos] = max(rest[r] >> TABLE_SHIFT, 1)
            pos += 1
        at += nb + 1
    return out


def mass_below(low: int, w: np.ndarray, mu: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(M,) float32 share of each mixture below symbol ``low`` (the zero flags' context):
    its CDF at the edge low - 1/2 over its total, divided in float64."""
    return _mass_below(low, w, mu, s, constants()[2])


@njit(cache=True)
def _mass_below(low, w, mu, s, sig):
    out = np.empty(w.shape[0], np.float32)
    cdf = np.zeros(1, np.int64)
    for r in range(w.shape[0]):
        total = 0
        for j in range(w.shape[1]):
            total += w[r, j] << SIG_BITS
        out[r] = np.float32(np.float64(_cdf_below(low, w, mu, s, sig, r, cdf)) / np.float64(total))
    return out


@njit(cache=True)
def _run_bounds(keys):
    """(R + 1,) int64: the first row of each run of equal values in ``keys`` (n,), then n;
    [0] (no run) where n = 0."""
    n = keys.shape[0]
    if n == 0:
        return np.zeros(1, np.int64)
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    out = np.empty(cuts.shape[0] + 2, np.int64)
    out[0] = 0
    out[1:-1] = cuts
    out[-1] = n
    return out


@njit(cache=True)
def _table_bounds(rows, n_bins, escape):
    """(R + 1,) int64: where each run of rows (:func:`_run_bounds`) starts in the flat entries
    (a row holds n_bins + escape entries)."""
    out = np.zeros(rows.shape[0], np.int64)
    at, r = 0, 0
    for i in range(1, rows.shape[0]):
        while r < rows[i]:
            at += n_bins[r] + escape
            r += 1
        out[i] = at
    return out


def _runs(keys: np.ndarray):
    """(first, end) of each run of equal values in ``keys``."""
    rows = _run_bounds(keys).tolist()
    return zip(rows[:-1], rows[1:])


def encode_symbols(coder, w: np.ndarray, mu: np.ndarray, s: np.ndarray, bits: int, sym: np.ndarray,
                   floored: bool = False, low: int = 0, cdf_entries: bool = True) -> None:
    """Encode M subpixels ``sym`` (M,) int64 with one integer mixture each: :func:`encode_calls`
    on one segment (:func:`decode_symbols` reads them back)."""
    encode_calls(coder, w, mu, s, bits, np.asarray(sym, np.int64), np.array([0, w.shape[0]], np.int64), floored, low,
                 cdf_entries=cdf_entries)


def decode_symbols(coder, w: np.ndarray, mu: np.ndarray, s: np.ndarray, bits: int, floored: bool = False,
                   low: int = 0, cdf_entries: bool = True) -> np.ndarray:
    """Decode M subpixels with one integer mixture each.

    Stream order: stage 1 (bin index or ESCAPE) bucketed by window width, stage 2 (offset inside
    the bin, where delta > 1) bucketed by bin size, then the escapes; each bucketing is one
    stable sort, so rows keep their index order inside a bucket. Each stage's windows, sort
    and tables are one numba call (:func:`_coarse_tables`, :func:`_fine_tables`: the decoder
    calls this per group and channel, a few hundred rows, where numpy glue cost more than the
    tables).

    Args:
        coder: constriction RangeDecoder.
        w, mu, s: (M, K) int64 weights (2^-16), means and scales (2^-13 symbols):
            :func:`hpac.nn.integer.units`.
        floored: floored tables (:func:`floor_tables`).
        low: smallest symbol (1: code the mixture conditioned on ``x != 0``).
        cdf_entries: table entries by version 10's rule (:func:`_entries`); False: 8's and 9's.
    Returns:
        (M,) int64 symbols.
    """
    m = w.shape[0]
    if m == 0:
        return np.zeros(0, np.int64)
    _, _, sig, lnw = constants()
    seg = np.zeros(m, np.int64)
    none = np.zeros(0, np.int64)
    lo, delta, width, _, order, flat, rows, at = _coarse_tables(w, mu, s, bits, low, lnw, sig, seg, none, cdf_entries,
                                                                False)
    coarse_o = np.empty(m, np.int32)
    _decode_runs(coder, _tables(flat, rows.tolist(), at.tolist()), coarse_o, floored)
    coarse = np.empty(m, np.int64)
    coarse[order] = coarse_o
    bin_lo, fine, flat, rows, at = _fine_tables(coarse, lo, delta, width, w, mu, s, bits, sig, seg, none, cdf_entries,
                                                False)
    out = bin_lo
    if fine.size:
        off = np.empty(fine.size, np.int32)
        _decode_runs(coder, _tables(flat, rows.tolist(), at.tolist()), off, floored)
        out[fine] += off
    esc = np.flatnonzero(coarse == width)
    if esc.size:  # uniform over the whole alphabet
        out[esc] = coder.decode(_uniform(), np.full(esc.size, 1 << bits, dtype=np.int32))
    return out


@njit(cache=True)
def _coarse_tables(w, mu, s, bits, low, lnw, sig, seg, sym, cdf_entries, coded_rows):
    """Stage 1 of :func:`decode_symbols` and :func:`encode_calls`: windows (lo, delta, width),
    the bin index of each of the encoder's symbols ``sym`` (M,) int64 (width: escaped; the
    decoder passes none and gets none), the rows' stable order by (segment, width) (seg (M,)
    int64 ascending: the encoder's calls; the decoder's one call is segment 0), and the tables
    of the rows in that order (:func:`_entries`, or the encoder's :func:`_coded_rows` where
    ``coded_rows``), flat, with the bounds of each run of one (segment, width)."""
    lo, delta, width = _windows(w, mu, s, lnw, bits, low)
    coarse = np.empty(sym.shape[0], np.int64)
    for r in range(sym.shape[0]):
        inside = sym[r] >= lo[r] and sym[r] < lo[r] + width[r] * delta[r]
        coarse[r] = (sym[r] - lo[r]) // delta[r] if inside else width[r]
    order = _order_by(seg, width)
    n_bins = width[order]
    if coded_rows:
        flat = _coded_rows(order, lo[order], delta[order], n_bins, coarse[order], bits, w, mu, s, sig, low, True)
    else:
        cdfs, rest = _edge_cdfs(order, lo[order], delta[order], n_bins, bits, w, mu, s, sig, low, True)
        flat = _entries(cdfs, rest, n_bins, True, cdf_entries)
    rows = _run_bounds(seg[order] * (MAX_BINS + 1) + n_bins)
    return lo, delta, width, coarse, order, flat, rows, _table_bounds(rows, n_bins, 1)


@njit(cache=True)
def _fine_tables(coarse, lo, delta, width, w, mu, s, bits, sig, seg, sym, cdf_entries, coded_rows):
    """Stage 2 of :func:`decode_symbols` and :func:`encode_calls`: each row's bin start (M,)
    int64, the rows with an offset to code (not escaped, delta > 1) in stable (segment, delta)
    order, and their tables (as :func:`_coarse_tables` makes them; ``sym``: the encoder's
    symbols, for ``coded_rows``), flat, with the bounds of each run."""
    bin_lo = lo + coarse * delta
    fine = np.flatnonzero((coarse != width) & (delta > 1))
    fine = fine[_order_by(seg[fine], delta[fine])]
    n_bins = delta[fine]
    ones = np.ones(fine.size, np.int64)
    if coded_rows:
        flat = _coded_rows(fine, bin_lo[fine], ones, n_bins, sym[fine] - bin_lo[fine], bits, w, mu, s, sig, 0, False)
    else:
        cdfs, rest = _edge_cdfs(fine, bin_lo[fine], ones, n_bins, bits, w, mu, s, sig, 0, False)
        flat = _entries(cdfs, rest, n_bins, False, cdf_entries)
    rows = _run_bounds(seg[fine] * (np.int64(1) << 40) + n_bins)
    return bin_lo, fine, flat, rows, _table_bounds(rows, n_bins, 0)


def _split(flat: np.ndarray, n_bins: np.ndarray, escape: bool):
    """(first, end, table) per run of equal ``n_bins`` of rows whose tables lie one after
    another in ``flat``."""
    rows = _run_bounds(n_bins)
    at = _table_bounds(rows, n_bins, int(escape))
    yield from _tables(flat, rows.tolist(), at.tolist())


def _tables(flat: np.ndarray, rows: list[int], at: list[int]):
    """(first, end, table (end - first, E)) per run: rows[i] .. rows[i + 1] - 1, its entries
    flat[at[i] : at[i + 1]]."""
    for i in range(len(rows) - 1):
        first, end = rows[i], rows[i + 1]
        yield first, end, flat[at[i] : at[i + 1]].reshape(end - first, -1)


def _decode_runs(coder, tables, values: np.ndarray, floored: bool) -> None:
    """Decode into (n,) int32 ``values`` run by run under the (first, end, table) runs of ``tables``."""
    model = categorical()
    for first, end, probs in tables:
        values[first:end] = coder.decode(model, floor_tables(probs) if floored else probs)


def encode_calls(coder, w: np.ndarray, mu: np.ndarray, s: np.ndarray, bits: int, sy: np.ndarray,
                 bounds: np.ndarray, floored: bool = False, low: int = 0,
                 lead: list[tuple[np.ndarray, np.ndarray]] | None = None, cdf_entries: bool = True) -> None:
    """Encode what :func:`encode_symbols` would over each row segment
    [bounds[i], bounds[i+1]) in turn, with the tables of all segments built at once: the same
    bytes with a fraction of the calls. The encoder knows every segment in advance; the
    decoder, whose later mixtures depend on decoded values, calls decode_symbols.

    Args:
        w, mu, s: (M, K) int64 integer mixtures; sy: (M,) int64 symbols; bounds: (n + 1,) int64
            ascending, bounds[0] = 0, bounds[-1] = M.
        lead: per segment, a categorical call (values (m,) int32, table (m, E) float32) to make
            ahead of its symbols (the zero flags); empty ones are skipped.
        cdf_entries: version 10's table entries (:func:`_entries`): then, unfloored, each table
            is built only where its symbol reads it (:func:`_coded_rows`).
    """
    m = w.shape[0]
    if m == 0 and lead is None:
        return
    _, _, sig, lnw = constants()
    seg = np.repeat(np.arange(len(bounds) - 1, dtype=np.int64), np.diff(bounds))
    ops: list[list] = [[] for _ in range(len(bounds) - 1)]  # per segment: (values, table | None)
    for i, (values, probs) in enumerate(lead or ()):
        if values.size:
            ops[i].append((values, probs))
    # every segment's stage 1, each bucketed by width as decode_symbols does: one stable sort
    # on (segment, width), so rows keep their order inside a bucket
    sy = np.ascontiguousarray(sy, np.int64)
    coded_rows = cdf_entries and not floored
    lo, delta, width, coarse, order, flat, rows, at = _coarse_tables(w, mu, s, bits, low, lnw, sig, seg, sy,
                                                                     cdf_entries, coded_rows)
    coarse_o = coarse[order].astype(np.int32)
    for i, j, probs in _tables(flat, rows.tolist(), at.tolist()):
        ops[int(seg[order[i]])].append((coarse_o[i:j], probs))
    bin_lo, fine, flat, rows, at = _fine_tables(coarse, lo, delta, width, w, mu, s, bits, sig, seg, sy, cdf_entries,
                                                coded_rows)
    if fine.size:
        off = (sy[fine] - bin_lo[fine]).astype(np.int32)
        for i, j, probs in _tables(flat, rows.tolist(), at.tolist()):
            ops[int(seg[fine[i]])].append((off[i:j], probs))
    esc = np.flatnonzero(coarse == width)
    for i, j in _runs(seg[esc]):
        ops[int(seg[esc[i]])].append((sy[esc[i:j]].astype(np.int32), None))
    for seg_ops in ops:
        for values, probs in seg_ops:
            if probs is None:
                coder.encode(values, _uniform(), np.full(values.size, 1 << bits, dtype=np.int32))
            else:
                coder.encode(values, categorical(), floor_tables(probs) if floored else probs)
