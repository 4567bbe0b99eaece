"""CSI: Cache-then-Select Inference over a batch of P x P patches (HPAC, Li, Bai et al. 2025;
after the Cache-then-Crop Inference of CALLIC, AAAI 2025).

Coding walks the 3P-2 skewed-diagonal groups in order. At group ``g`` only the positions of
that group (in every patch of the batch) are computed, through every layer:

* the stem (and the linear skip predictor) read their strict-masked taps from the cached
  *pixels* of earlier groups;
* each block writes ``a = W_a LN(x)`` of the new positions into its cache, then applies its
  inclusive-masked depthwise conv reading that cache (same-group taps included: they were
  written just before), and runs the 1x1 layers on the selected rows only;
* the head turns the selected rows into mixture parameters.

After the channels of group ``g`` are coded, :meth:`CSIStepper.write_pixels` stores them in
the pixel cache. A whole patch therefore costs one forward pass, spread over 3P-2 steps. The
network is the integer one (:mod:`hpac.nn.integer`), whose every layer is exact, so a step may
hold any number of consecutive groups and give the same integers: the encoder, which knows
every pixel, steps a patch about :data:`SPAN_POSITIONS` positions at a time
(:func:`plane_params`). Those are the decoder's kernels on a span of groups, and their
activations stay in the core's cache, where a whole 128 x 128 patch's (16384 positions x 64
channels x 4 bytes a tensor) did not.

Skewed caches. In coordinates ``v = c + 2r`` (the group) and ``u = r``, group ``g`` is one
row ``v = g``, its positions a contiguous run of ``u``, and a kernel tap (dr, dc) reads row
``g + dc + 2dr`` at ``u + dr``. Every masked tap therefore lies in the band of the last
``3(k//2) + 1`` rows, and a masked kxk conv of the whole group is one pass over that band
(kernel ``(3(k//2)+1) x k``; the numba kernels visit only its nonzero taps). Only the band
is kept, in a ring buffer of R rows (the band and a step's own groups: a kernel reads band
row ``t`` of group ``g`` at ring row ``(g - reach + t) mod R``). Memory per cache: (B, D, R, P + k - 1) float32 integers, channels-last (the pixel
cache: the network's input dtype, IntNet.in_dtype).

Only what reaches a real pixel is computed. In an image-edge patch the positions beyond
:func:`hpac.nn.integer.patch_extents` are padding whose values reach no real pixel's
mixture; in every group each patch's needed positions are one contiguous run ``lo_b <= i <
hi_b``, and the kernels work on those runs, packed group by group (:class:`Runs`). A cache row keeps zeros outside its group (the conv's
padding) and, inside it, stale values where a position was skipped: only skipped positions
read those.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from . import integer
from .architecture import gated_block, ModelConfig
from .integer import IntNet
from .schedule import group_schedule, skew_kernel


def cache_bytes(cfg: ModelConfig, batch: int) -> int:
    """Bytes of the caches a stepper holds to code ``batch`` patches of cfg.patch: the pixel
    ring (float64) and one ring per block (float32). The CSI caches are most of a shard's
    memory, so the decoder bounds them before it allocates anything
    (hpac.shards.MAX_SHARD_CACHE_BYTES)."""
    reach, pad = 3 * (cfg.kernel // 2), cfg.kernel // 2
    width = cfg.patch + 2 * pad
    pix = batch * cfg.channels * (reach + 1) * width * 8
    blocks = cfg.blocks * batch * cfg.dim * (reach + 1) * width * 4
    return pix + blocks


@dataclass(frozen=True)
class Runs:
    """Which positions of a span of G groups are computed: per group i and patch b the run
    lo[i, b] <= j < hi[i, b] of the group's positions, packed at rows off[i B + b] ..
    off[i B + b + 1] - 1 (group outer, patch inner: the coding order); lo, hi (G, B), off
    (G B + 1,) int64."""

    lo: np.ndarray
    hi: np.ndarray
    off: np.ndarray

    @staticmethod
    def every(batch: int, sizes: np.ndarray) -> "Runs":
        """All positions of every patch, for groups of ``sizes`` (G,) positions."""
        hi = np.repeat(np.asarray(sizes, np.int64)[:, None], batch, axis=1)
        return Runs(np.zeros_like(hi), hi, np.concatenate([[0], np.cumsum(hi.reshape(-1))]))

    @property
    def count(self) -> int:
        return int(self.off[-1])


class Band:
    """Ring buffer of the last ``rows`` skewed rows of one cache: ``buf`` (B, C, rows, P + 2p)
    and ``view``, the same memory as (B, rows, P + 2p, C); channels innermost in memory
    (``channels_last``) or rows of one channel (the pixels: the stem gathers them per channel).
    Group g lives in ring row g mod rows."""

    def __init__(self, batch: int, channels: int, rows: int, patch: int, pad: int,
                 dtype: np.dtype = np.float32, channels_last: bool = True):
        self.rows, self.pad = rows, pad
        width = patch + 2 * pad
        if channels_last:
            self.view = np.zeros((batch, rows, width, channels), dtype)
            self.buf = self.view.transpose(0, 3, 1, 2)
        else:
            self.buf = np.zeros((batch, channels, rows, width), dtype)
            self.view = self.buf.transpose(0, 2, 3, 1)
        self.span = np.zeros((rows, 2), np.int64)  # per ring row: the columns of its last group; zeros elsewhere

    def clear(self) -> None:
        """Every row zero: a new batch of patches (whose groups before 0 read as padding)."""
        self.buf.fill(0)
        self.span[:] = 0

    def write(self, g0: int, first_row: np.ndarray, sizes: np.ndarray, values: np.ndarray, runs: Runs) -> None:
        """Rows g0 .. g0 + G - 1 := values (runs.count, C), the packed runs of each group's
        sizes[i] positions at u = first_row[i].., zeros outside the groups."""
        _ring_write(self.view, self.span, g0, first_row + self.pad, sizes, values, runs.lo, runs.hi, runs.off)


@njit(cache=True)
def _ring_write(buf, span, g0, first, sizes, values, run_lo, run_hi, off):
    """Ring rows of groups g0 + i of buf (B, R, W, C) := the packed runs of values (M, C) at
    columns first[i] + j, zero outside the group's columns. Outside the group is padding and
    must read as zero: only what the row's last group wrote there (span[row]) is cleared
    (zeroing whole rows was ~4% of effort 0's time). Element loops: numba's slice assignment,
    row by row, cost as much again as the copy."""
    nb, ring, d = buf.shape[0], buf.shape[1], buf.shape[3]
    for i in range(first.shape[0]):
        slot = (g0 + i) % ring
        lo, hi = span[slot, 0], span[slot, 1]
        a = first[i]
        e = a + sizes[i]
        for b in range(nb):
            dst = buf[b, slot]
            for j in range(lo, min(hi, a)):
                for c in range(d):
                    dst[j, c] = 0
            for j in range(max(lo, e), hi):
                for c in range(d):
                    dst[j, c] = 0
            o = off[i * nb + b] - run_lo[i, b]
            for j in range(run_lo[i, b], run_hi[i, b]):
                for c in range(d):
                    dst[a + j, c] = values[o + j, c]
        span[slot, 0], span[slot, 1] = a, e


@njit(cache=True)
def _band_depthwise(buf, g0, reach, first, tap_row, tap_col, tap_w, run_lo, run_hi, off, out):
    """out[off_(i,b) + j - lo_(i,b)] = sum_t buf[b, (g - reach + tap_row[t]) mod R, first_i + j +
    tap_col[t]] tap_w[t] for each group g = g0 + i of the span and each patch's run: the band
    conv of the groups over their nonzero taps only, channels innermost (they vectorise).
    Every product and partial sum is an integer below 2^24 (hpac.nn.integer.load checks the
    bound): exact in float32, in any order.

    Four taps a pass over the run (one shifted row of the band each): the output rows are
    loaded and stored a quarter as often, which bound the one-tap loop (1.4x faster).

    buf: (B, R, P + 2p, D) float32 (a Band's view); tap_w: (T, D) float32 (a view);
    out: (M, D) float32."""
    nb, ring, d = buf.shape[0], buf.shape[1], buf.shape[3]
    nt = tap_row.shape[0]
    for i in range(first.shape[0]):
        top = (g0 + i - reach) % ring  # the band's oldest row in the ring
        for b in range(nb):
            o = out[off[i * nb + b] : off[i * nb + b + 1]]
            o[:] = 0
            m = run_hi[i, b] - run_lo[i, b]
            base = first[i] + run_lo[i, b]
            t = 0
            while t + 4 <= nt:
                r0 = buf[b, (top + tap_row[t]) % ring, base + tap_col[t]:]
                r1 = buf[b, (top + tap_row[t + 1]) % ring, base + tap_col[t + 1]:]
                r2 = buf[b, (top + tap_row[t + 2]) % ring, base + tap_col[t + 2]:]
                r3 = buf[b, (top + tap_row[t + 3]) % ring, base + tap_col[t + 3]:]
                w0, w1, w2, w3 = tap_w[t], tap_w[t + 1], tap_w[t + 2], tap_w[t + 3]
                for j in range(m):
                    for c in range(d):
                        o[j, c] += (r0[j, c] * w0[c] + r1[j, c] * w1[c]) + (r2[j, c] * w2[c] + r3[j, c] * w3[c])
                t += 4
            while t < nt:
                r0 = buf[b, (top + tap_row[t]) % ring, base + tap_col[t]:]
                w0 = tap_w[t]
                for j in range(m):
                    for c in range(d):
                        o[j, c] += r0[j, c] * w0[c]
                t += 1


@njit(cache=True)
def _band_gather(buf, g0, reach, first, tap_row, tap_col, run_lo, run_hi, off, out):
    """The stem/skip conv's inputs of the span's runs as rows: out[off_(i,b) + j - lo_(i,b), t C + c]
    = buf[b, c, (g - reach + tap_row[t]) mod R, first_i + j + tap_col[t]]; the conv is then one
    exact product with the taps' weights (T C, O) (integer sums bounded below 2^24 in float32
    or 2^53 in float64: hpac.nn.integer.IntNet.in_dtype).

    buf: (B, C, R, P + 2p) the pixel Band's buffer; out: (M, T C) in its dtype."""
    nb, ch, ring = buf.shape[0], buf.shape[1], buf.shape[2]
    for i in range(first.shape[0]):
        top = (g0 + i - reach) % ring
        for b in range(nb):
            o0 = off[i * nb + b] - run_lo[i, b]
            for j in range(run_lo[i, b], run_hi[i, b]):
                o = out[o0 + j]
                for t in range(tap_row.shape[0]):
                    rr, cc = (top + tap_row[t]) % ring, first[i] + j + tap_col[t]
                    for c in range(ch):
                        o[t * ch + c] = buf[b, c, rr, cc]


class BandTaps:
    """The nonzero taps of an (O, I, H, k) band kernel (:func:`skew_kernel`): rows, columns
    (T,) int64 and weights (T, I, O) in the kernel's dtype."""

    def __init__(self, band: np.ndarray):
        nz = np.argwhere((band != 0).any(axis=0).any(axis=0))
        self.row = np.ascontiguousarray(nz[:, 0], np.int64)
        self.col = np.ascontiguousarray(nz[:, 1], np.int64)
        self.w = np.ascontiguousarray(band[:, :, self.row, self.col].transpose(2, 1, 0))


class CSIStepper:
    """The group-by-group evaluation of an integer network (:class:`hpac.nn.integer.IntNet`)
    on B patches, ``span`` groups a step: the decoder steps one group at a time (params(g),
    then write_pixels(g, q) once group g is known); the encoder's :func:`plane_params`, which
    knows every pixel, steps many.

    ``extent``: (B, 2) int64 rows and columns of each patch's top-left corner that reach a real
    pixel (:func:`hpac.nn.integer.patch_extents`); positions beyond are skipped (module
    docstring). None: every position."""

    def __init__(self, net: IntNet, batch: int, extent: np.ndarray | None = None, span: int = 1):
        cfg = net.cfg
        self.net, self.cfg, self.batch, self.span = net, cfg, batch, span
        self.sched = group_schedule(cfg.patch, cfg.kernel)
        self.first = np.array(self.sched.first_row, np.int64)
        self.sizes = np.array([r.size for r in self.sched.rows], np.int64)
        reach, pad = self.sched.reach, cfg.kernel // 2
        self.extent = None
        self.set_extent(extent)
        self._every: dict[tuple[int, int], Runs] = {}
        dt = net.in_dtype
        self.in_taps = BandTaps(skew_kernel(net.in_w.astype(dt), strict=True))
        # a step of groups g0..g1-1 reads pixels of groups g0 - reach .. g1 - 2: they and the
        # step's own groups fit the ring without overwriting one another
        self.pix = Band(batch, cfg.channels, reach + span, cfg.patch, pad, dt, channels_last=False)
        self.pix_buf = self.pix.buf
        w = self.in_taps.w.reshape(-1, self.in_taps.w.shape[2])  # (T C, D + CK)
        # zero columns up to a multiple of 8: the product runs ~1.5x faster (79 -> 80 for RGB)
        self.in_w = np.pad(w, ((0, 0), (0, -w.shape[1] % 8)))
        self.caches = [Band(batch, cfg.dim, reach + span, cfg.patch, pad) for _ in net.blocks]
        self.taps = [BandTaps(blk.dw.band) for blk in net.blocks]

    def set_extent(self, extent: np.ndarray | None) -> None:
        full = extent is None or bool((np.asarray(extent) == self.cfg.patch).all())
        self.extent = None if full else np.asarray(extent, np.int64)

    def reset(self, extent: np.ndarray | None = None) -> None:
        """Start a new batch of patches (``extent`` as in the constructor)."""
        self.set_extent(extent)
        for band in [self.pix, *self.caches]:
            band.clear()

    def every(self, g0: int, g1: int) -> Runs:
        """Every position of groups g0 .. g1 - 1 (cached: the encoder asks for the same spans
        patch after patch)."""
        key = (g0, g1)
        if key not in self._every:
            self._every[key] = Runs.every(self.batch, self.sizes[g0:g1])
        return self._every[key]

    def runs(self, g0: int, g1: int) -> Runs:
        """The positions of groups g0 .. g1 - 1 this stepper computes."""
        if self.extent is None:
            return self.every(g0, g1)
        n = self.sizes[g0:g1, None]
        r0 = self.first[g0:g1, None]
        g = np.arange(g0, g1)[:, None]
        rows, cols = self.extent[None, :, 0], self.extent[None, :, 1]
        lo = np.clip((g - cols) // 2 + 1 - r0, 0, n)  # c = g - 2 (r0 + i) < cols
        hi = np.maximum(lo, np.clip(rows - r0, 0, n))  # r0 + i < rows
        return Runs(lo, hi, np.concatenate([[0], np.cumsum((hi - lo).reshape(-1))]))

    def span_params(self, g0: int, g1: int, runs: Runs | None = None, out: np.ndarray | None = None,
                    rows: np.ndarray | None = None) -> tuple[np.ndarray, Runs]:
        """Integer mixture parameters of groups g0 .. g1 - 1 (at most ``span``) and the runs
        they are (``runs``: :meth:`runs`' for these groups, if the caller has them). The
        parameters are packed rows (runs.count, n_params) float64, or go to rows ``rows``
        (runs.count,) of ``out`` (:meth:`hpac.nn.integer.IntNet.tail`). The pixels of groups
        before g1 - 1 must be written."""
        reach = self.sched.reach
        first, sizes = self.first[g0:g1], self.sizes[g0:g1]
        runs = self.runs(g0, g1) if runs is None else runs
        m = runs.count
        t = self.in_taps
        cols = np.empty((m, self.in_w.shape[0]), self.pix_buf.dtype)
        _band_gather(self.pix_buf, g0, reach, first, t.row, t.col, runs.lo, runs.hi, runs.off, cols)
        acc = np.empty((m, self.in_w.shape[1]), cols.dtype)
        np.matmul(cols, self.in_w, out=acc)
        x, skip = self.net.stem_out(acc)
        ar = self.net.arith
        for blk, cache, taps in zip(self.net.blocks, self.caches, self.taps):
            def depthwise(a, p, cache=cache, taps=taps):
                cache.write(g0, first, sizes, a, runs)
                out = np.empty(a.shape, np.float32)
                _band_depthwise(cache.view, g0, reach, first, taps.row, taps.col, taps.w[:, 0],
                                runs.lo, runs.hi, runs.off, out)
                return out

            x = gated_block(ar, blk, x, depthwise)
        return self.net.tail(x, skip, out, rows), runs

    def params(self, g: int) -> np.ndarray:
        """Integer mixture parameters of group ``g``: (B, n_g, n_params) float64 (0 where skipped)."""
        b, n = self.batch, int(self.sizes[g])
        packed, runs = self.span_params(g, g + 1)
        if runs.count == b * n:
            return packed.reshape(b, n, -1)
        out = np.zeros((b, n, packed.shape[1]))
        for i in range(b):
            out[i, runs.lo[0, i] : runs.hi[0, i]] = packed[runs.off[i] : runs.off[i + 1]]
        return out

    def write_pixels(self, g: int, q: np.ndarray) -> None:
        """Store group ``g``'s coded pixels as q (B, n_g, C) float64 (0 on padding)."""
        self.write_span_pixels(g, g + 1, q.reshape(-1, q.shape[2]))

    def write_span_pixels(self, g0: int, g1: int, rows: np.ndarray) -> None:
        """Store the pixels of groups g0 .. g1 - 1 (at most ``span``): rows (M, C) as q, every
        position of each group, group outer, patch inner (0 on padding)."""
        sizes = self.sizes[g0:g1]
        self.pix.write(g0, self.first[g0:g1], sizes, rows, self.every(g0, g1))


SPAN_POSITIONS = 1024  # the encoder's steps: about this many positions of a patch at a time, whose
# activations stay in the core's cache (19% faster than a whole 128 x 128 patch a pass, one thread)


def plane_params(net: IntNet, sym: np.ndarray, valid: np.ndarray | None = None,
                 extent: np.ndarray | None = None, out: np.ndarray | None = None,
                 span: int | None = None, rows: np.ndarray | None = None) -> np.ndarray:
    """Every position's integer mixture parameters (the encoder, which knows every pixel):
    patch by patch, in steps of many groups, with the decoder's kernels.

    Args:
        sym: (B, P, P, C) integer symbols; valid: (B, P, P) bool, False on padding (the
            decoder has no pixel there: it reads q = 0), or None for all real.
        extent: (B, 2) what each patch computes (:func:`hpac.nn.integer.patch_extents`, the
            default where ``valid`` is given; None and no valid: everything).
        out: (B, P, P, n_params) float32 or float64 to fill (exact: hpac.nn.integer.IntNet.params_dtype).
        span: groups a step (default: about :data:`SPAN_POSITIONS` positions); the integers
            do not depend on it.
        rows: (B, P P) int64, the row of ``out`` (then (M, n_params)) each position's
            parameters go to (the encoder's coding order, read in streams; padding may share a
            scratch row); None: ``out`` is (B, P, P, n_params).
    Returns:
        ``out`` (default float64 zeros): at every real pixel the integers :class:`CSIStepper`
        gives the decoder; padding inside ``extent`` holds values no one codes (they read
        skipped positions), beyond it ``out`` is left as it was.
    """
    cfg = net.cfg
    b, p = sym.shape[0], cfg.patch
    if sym.shape[1:3] != (p, p):
        raise ValueError(f"plane_params takes {p} x {p} patches, not {tuple(sym.shape[1:3])}")
    q = integer.centred(sym, net.bits)
    if valid is not None:
        q = q * valid[..., None]
        if extent is None:
            extent = integer.patch_extents(cfg, valid)
    if out is None:
        if rows is not None:
            raise ValueError("plane_params with rows writes into the caller's out (M, n_params)")
        out = np.zeros((b, p, p, cfg.n_params))
    sched = group_schedule(p, cfg.kernel)
    if span is None:
        span = max(1, SPAN_POSITIONS * 3 // p)  # a group holds P / 3 positions on average
    st = CSIStepper(net, 1, span=span)
    flat = sched.flat
    positions: dict[tuple[int, int], np.ndarray] = {}
    q_rows = q.reshape(b, p * p, -1)
    out_rows = out.reshape(b, p * p, -1) if rows is None else out  # a view: ``out`` is contiguous
    for i in range(b):
        st.reset(None if extent is None else extent[i : i + 1])
        ext = (p, p) if extent is None else tuple(extent[i])
        last = min(sched.groups, (ext[1] - 1) + 2 * (ext[0] - 1) + 1) if min(ext) > 0 else 0
        for g0 in range(0, last, span):
            g1 = min(last, g0 + span)
            if (g0, g1) not in positions:  # the same spans patch after patch
                positions[g0, g1] = np.concatenate(flat[g0:g1])
            pos = positions[g0, g1]
            st.write_span_pixels(g0, g1, q_rows[i, pos])
            runs = st.runs(g0, g1)
            if runs.count != pos.size:  # the rows computed are each group's run
                pos = np.concatenate([flat[g][lo:hi] for g, lo, hi in zip(range(g0, g1), runs.lo[:, 0], runs.hi[:, 0])])
            if rows is None:
                st.span_params(g0, g1, runs, out_rows[i], pos)
            else:
                st.span_params(g0, g1, runs, out_rows, rows[i, pos])
    return out
