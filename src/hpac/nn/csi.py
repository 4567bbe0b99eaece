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
the pixel cache. A whole patch therefore costs one forward pass, spread over 3P-2 steps. Only
the decoder steps: the network is the integer one (:mod:`hpac.nn.integer`), whose every layer is
exact, so the encoder computes the same integers for a whole plane in one pass
(:func:`hpac.nn.integer.plane_params`).

Skewed caches. In coordinates ``v = c + 2r`` (the group) and ``u = r``, group ``g`` is one
row ``v = g``, its positions a contiguous run of ``u``, and a kernel tap (dr, dc) reads row
``g + dc + 2dr`` at ``u + dr``. Every masked tap therefore lies in the band of the last
``3(k//2) + 1`` rows, and a masked kxk conv of the whole group is one pass over that band
(kernel ``(3(k//2)+1) x k``; the numba kernels visit only its nonzero taps). Only the band
is kept, in a ring buffer of R rows (a kernel reads band row ``t`` at ring row ``(g - R + t)
mod R``). Memory per cache: (B, D, R, P + k - 1) float32 integers, channels-last (the pixel
cache: the network's input dtype, IntNet.in_dtype).

Only what reaches a real pixel is computed. In an image-edge patch the positions beyond
:func:`hpac.nn.integer.patch_extents` are padding whose values reach no real pixel's
mixture (the encoder's one pass leaves them out too); in every group each patch's needed
positions are one contiguous run ``lo_b <= i < hi_b``, and the kernels work on those runs,
packed (row ``off_b + i - lo_b``). A cache row keeps zeros outside its group (the conv's
padding) and, inside it, stale values where a position was skipped: only skipped positions
read those.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit

from .integer import IntNet
from .model import ModelConfig, gated_block
from .schedule import group_schedule, skew_kernel


def cache_bytes(cfg: ModelConfig, batch: int) -> int:
    """Bytes of the caches a stepper holds to code ``batch`` patches of cfg.patch: the pixel
    ring (float64) and one ring per block (float32). The CSI caches are most of a shard's
    memory, so the decoder bounds them before it allocates anything
    (hpac.shards.MAX_SHARD_CACHE_BYTES)."""
    reach, pad = 3 * (cfg.kernel // 2), cfg.kernel // 2
    width = cfg.patch + 2 * pad
    pix = batch * cfg.channels * reach * width * 8
    blocks = cfg.blocks * batch * cfg.dim * (reach + 1) * width * 4
    return pix + blocks


@dataclass(frozen=True)
class Runs:
    """Which positions of a group are computed: per patch b the run lo[b] <= i < hi[b],
    packed at rows off[b] .. off[b + 1] - 1; (B,) / (B + 1,) int64."""

    lo: np.ndarray
    hi: np.ndarray
    off: np.ndarray

    @staticmethod
    def every(batch: int, n: int) -> "Runs":
        """All n positions of every patch."""
        return Runs(np.zeros(batch, np.int64), np.full(batch, n, np.int64), np.arange(batch + 1, dtype=np.int64) * n)

    @property
    def count(self) -> int:
        return int(self.off[-1])


class Band:
    """Ring buffer of the last ``rows`` skewed rows of one cache: ``buf`` (B, C, rows, P + 2p)
    and ``view``, the same memory as numpy (B, rows, P + 2p, C)."""

    def __init__(self, batch: int, channels: int, rows: int, patch: int, pad: int,
                 dtype: torch.dtype = torch.float32, memory_format: torch.memory_format = torch.channels_last):
        self.rows, self.pad = rows, pad
        self.buf = torch.zeros(batch, channels, rows, patch + 2 * pad, dtype=dtype).contiguous(
            memory_format=memory_format)
        self.view = self.buf.permute(0, 2, 3, 1).numpy()
        self.span = [(0, 0)] * rows  # per ring row: the columns of its last group; zeros elsewhere

    def write(self, g: int, first_row: int, n: int, values: np.ndarray, runs: Runs) -> None:
        """Row g := values (runs.count, C), the packed runs of the group's n positions at
        u = first_row.., zeros outside the group."""
        a = first_row + self.pad
        slot = g % self.rows
        lo, hi = self.span[slot]
        _ring_write(self.view[:, slot], lo, hi, a, n, values, runs.lo, runs.hi, runs.off)
        self.span[slot] = (a, a + n)


@njit(cache=True)
def _ring_write(buf, lo, hi, a, n, values, run_lo, run_hi, off):
    """One ring row buf (B, W, C) := the packed runs of values (M, C) at columns a + i, zero
    outside the group's columns a .. a + n - 1. Outside the group is padding and must read as
    zero: only what the row's last group wrote there (columns lo..hi) is cleared (zeroing
    whole rows was ~4% of effort 0's time)."""
    e = a + n
    for b in range(buf.shape[0]):
        dst = buf[b]
        for j in range(lo, min(hi, a)):
            dst[j, :] = 0
        for j in range(max(lo, e), hi):
            dst[j, :] = 0
        for i in range(run_lo[b], run_hi[b]):
            dst[a + i, :] = values[off[b] + i - run_lo[b], :]


@njit(cache=True)
def _band_depthwise(buf, top, r0, tap_row, tap_col, tap_w, run_lo, run_hi, off, out):
    """out[off_b + i - lo_b] = sum_t buf[b, (top + tap_row[t]) mod R, r0 + i + tap_col[t]] tap_w[t]
    over each patch's run lo_b <= i < hi_b: the band conv of one group over its nonzero taps
    only, channels innermost (they vectorise). Every product and partial sum is an integer
    below 2^24 (hpac.nn.integer.load checks the bound): exact in float32, in any order.

    buf: (B, R, P + 2p, D) float32 (a Band's view); tap_w: (T, D) float32 (a view);
    out: (M, D) float32."""
    d, ring = buf.shape[3], buf.shape[1]
    for b in range(buf.shape[0]):
        o = out[off[b] : off[b + 1]]
        o[:] = 0
        m = run_hi[b] - run_lo[b]
        for t in range(tap_row.shape[0]):  # tap by tap: one shifted row of the band each
            row, first = (top + tap_row[t]) % ring, r0 + run_lo[b] + tap_col[t]
            w = tap_w[t]
            for i in range(m):
                for c in range(d):
                    o[i, c] += buf[b, row, first + i, c] * w[c]


@njit(cache=True)
def _band_gather(buf, top, r0, tap_row, tap_col, run_lo, run_hi, off, out):
    """The stem/skip conv's inputs of one group's runs as rows: out[off_b + i - lo_b, t C + c] =
    buf[b, c, (top + tap_row[t]) mod R, r0 + i + tap_col[t]]; the conv is then one exact
    product with the taps' weights (T C, O) (integer sums bounded below 2^24 in float32 or
    2^53 in float64: hpac.nn.integer.IntNet.in_dtype).

    buf: (B, C, R, P + 2p) the pixel Band's buffer; out: (M, T C) in its dtype."""
    ch, ring = buf.shape[1], buf.shape[2]
    for b in range(buf.shape[0]):
        for i in range(run_lo[b], run_hi[b]):
            o = out[off[b] + i - run_lo[b]]
            for t in range(tap_row.shape[0]):
                rr, cc = (top + tap_row[t]) % ring, r0 + i + tap_col[t]
                for c in range(ch):
                    o[t * ch + c] = buf[b, c, rr, cc]


class BandTaps:
    """The nonzero taps of an (O, I, H, k) band kernel (:func:`skew_kernel`): rows, columns
    (T,) int64 and weights (T, I, O) in the kernel's dtype."""

    def __init__(self, band: torch.Tensor):
        nz = torch.nonzero(band.ne(0).any(dim=0).any(dim=0))
        self.row = nz[:, 0].contiguous().numpy()
        self.col = nz[:, 1].contiguous().numpy()
        self.w = np.ascontiguousarray(band[:, :, nz[:, 0], nz[:, 1]].permute(2, 1, 0).numpy())


class CSIStepper:
    """The decoder's group-by-group evaluation of an integer network (:class:`hpac.nn.integer.IntNet`)
    on B patches: params(g), then write_pixels(g, q) once group g is known.

    ``extent``: (B, 2) int64 rows and columns of each patch's top-left corner that reach a real
    pixel (:func:`hpac.nn.integer.needed_extent` per patch); positions beyond are skipped
    (module docstring). None: every position."""

    def __init__(self, net: IntNet, batch: int, extent: np.ndarray | None = None):
        cfg = net.cfg
        self.net, self.cfg, self.batch = net, cfg, batch
        self.sched = group_schedule(cfg.patch, cfg.kernel)
        reach, pad = self.sched.reach, cfg.kernel // 2
        full = extent is None or bool((extent == cfg.patch).all())
        self.extent = None if full else np.asarray(extent, np.int64)
        dt = net.in_dtype
        self.in_taps = BandTaps(skew_kernel(net.in_w.to(dt), strict=True))
        self.pix = Band(batch, cfg.channels, reach, cfg.patch, pad, dt, torch.contiguous_format)
        self.pix_buf = self.pix.buf.numpy()
        w = self.in_taps.w.reshape(-1, self.in_taps.w.shape[2])  # (T C, D + CK)
        # zero columns up to a multiple of 8: the product runs ~1.5x faster (79 -> 80 for RGB)
        self.in_w = torch.from_numpy(np.pad(w, ((0, 0), (0, -w.shape[1] % 8))))
        self.caches = [Band(batch, cfg.dim, reach + 1, cfg.patch, pad) for _ in net.blocks]
        self.taps = [BandTaps(blk.dw.band) for blk in net.blocks]

    def runs(self, g: int) -> Runs:
        """The positions of group g this stepper computes."""
        n = self.sched.rows[g].numel()
        if self.extent is None:
            return Runs.every(self.batch, n)
        r0 = self.sched.first_row[g]
        rows, cols = self.extent[:, 0], self.extent[:, 1]
        lo = np.clip((g - cols) // 2 + 1 - r0, 0, n)  # c = g - 2 (r0 + i) < cols
        hi = np.maximum(lo, np.clip(rows - r0, 0, n))  # r0 + i < rows
        return Runs(lo, hi, np.concatenate([[0], np.cumsum(hi - lo)]))

    @torch.no_grad()
    def params(self, g: int) -> torch.Tensor:
        """Integer mixture parameters of group ``g``: (B, n_g, n_params) float64 (0 where skipped)."""
        b, reach = self.batch, self.sched.reach
        r0 = self.sched.first_row[g]
        n = self.sched.rows[g].numel()
        runs = self.runs(g)
        m = runs.count
        t = self.in_taps
        cols = np.empty((m, self.in_w.shape[0]), self.pix_buf.dtype)
        _band_gather(self.pix_buf, g % reach, r0, t.row, t.col, runs.lo, runs.hi, runs.off, cols)
        acc = np.empty((m, self.in_w.shape[1]), cols.dtype)
        torch.mm(torch.from_numpy(cols), self.in_w, out=torch.from_numpy(acc))
        x, skip = self.net.stem_out(acc)
        ar = self.net.arith
        top = (g - reach) % (reach + 1)  # the band's oldest row in the ring
        for blk, cache, taps in zip(self.net.blocks, self.caches, self.taps):
            def depthwise(a, p, cache=cache, taps=taps):
                cache.write(g, r0, n, a, runs)
                out = np.empty(a.shape, np.float32)
                _band_depthwise(cache.view, top, r0, taps.row, taps.col, taps.w[:, 0], runs.lo, runs.hi, runs.off, out)
                return out

            x = gated_block(ar, blk, x, depthwise)
        packed = self.net.tail(x, skip)
        if m == b * n:
            return torch.from_numpy(packed).view(b, n, -1)
        out = np.zeros((b, n, packed.shape[1]))
        for i in range(b):
            out[i, runs.lo[i] : runs.hi[i]] = packed[runs.off[i] : runs.off[i + 1]]
        return torch.from_numpy(out)

    def write_pixels(self, g: int, q: torch.Tensor) -> None:
        """Store group ``g``'s coded pixels as q (B, n_g, C) float64 (0 on padding)."""
        n = q.shape[1]
        self.pix.write(g, self.sched.first_row[g], n, q.numpy().reshape(-1, q.shape[2]), Runs.every(self.batch, n))
