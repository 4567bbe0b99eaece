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
is kept, in a ring buffer written twice (rows ``i`` and ``i + R``) so the band is always
contiguous. Memory per cache: (B, D, 2R, P + k - 1) float32 integers, channels-last (the
pixel cache: the network's input dtype, IntNet.in_dtype).
"""
from __future__ import annotations

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
    pix = batch * cfg.channels * 2 * reach * width * 8
    blocks = cfg.blocks * batch * cfg.dim * 2 * (reach + 1) * width * 4
    return pix + blocks


class Band:
    """Ring buffer of the last ``rows`` skewed rows of one cache: ``buf`` (B, C, 2*rows, P + 2p)
    and ``view``, the same memory as numpy (B, 2*rows, P + 2p, C)."""

    def __init__(self, batch: int, channels: int, rows: int, patch: int, pad: int,
                 dtype: torch.dtype = torch.float32, memory_format: torch.memory_format = torch.channels_last):
        self.rows, self.pad = rows, pad
        self.buf = torch.zeros(batch, channels, 2 * rows, patch + 2 * pad, dtype=dtype).contiguous(
            memory_format=memory_format)
        self.view = self.buf.permute(0, 2, 3, 1).numpy()
        self.span = [(0, 0)] * rows  # per ring row: the columns its last write filled; zeros elsewhere

    def write(self, g: int, first_row: int, values: np.ndarray) -> None:
        """Row g := values (B, n, C) at u = first_row.., zeros elsewhere."""
        a = first_row + self.pad
        slot = g % self.rows
        lo, hi = self.span[slot]
        _ring_write(self.view, slot, self.rows, lo, hi, a, values)
        self.span[slot] = (a, a + values.shape[1])


@njit(cache=True)
def _ring_write(buf, slot, rows, lo, hi, a, values):
    """Ring rows ``slot`` and ``slot + rows`` of buf (B, 2R, W, C) := values (B, n, C) at
    columns a.., zero elsewhere. Outside the group is padding and must read as zero: only
    what the row's last group wrote there (columns lo..hi) is cleared (zeroing whole rows was
    ~4% of effort 0's time)."""
    nb, n, ch = values.shape
    e = a + n
    for b in range(nb):
        for row in (slot, slot + rows):
            dst = buf[b, row]
            for j in range(lo, min(hi, a)):
                dst[j, :] = 0
            for j in range(max(lo, e), hi):
                dst[j, :] = 0
            for i in range(n):
                for c in range(ch):
                    dst[a + i, c] = values[b, i, c]


@njit(cache=True)
def _band_depthwise(buf, top, r0, n, tap_row, tap_col, tap_w, out):
    """out[b, i] = sum_t buf[b, top + tap_row[t], r0 + i + tap_col[t]] * tap_w[t]: the band conv
    of one group over its nonzero taps only, channels innermost (they vectorise). Every
    product and partial sum is an integer below 2^24 (hpac.nn.integer.load checks the bound):
    exact in float32, in any order.

    buf: (B, 2R, P + 2p, D) float32 (a Band's buffer, channels last); tap_w: (T, D) float32 (a view);
    out: (B, n, D) float32."""
    nb, d = buf.shape[0], buf.shape[3]
    for b in range(nb):
        o = out[b]
        o[:n] = 0
        for t in range(tap_row.shape[0]):  # tap by tap: one shifted row of the band each
            row, first = top + tap_row[t], r0 + tap_col[t]
            w = tap_w[t]
            for i in range(n):
                for c in range(d):
                    o[i, c] += buf[b, row, first + i, c] * w[c]


@njit(cache=True)
def _band_gather(buf, top, r0, n, tap_row, tap_col, out):
    """The stem/skip conv's inputs of one group as rows: out[b n + i, t C + c] = buf[b, c,
    top + tap_row[t], r0 + i + tap_col[t]]; the conv is then one exact product with the
    taps' weights (T C, O) (integer sums bounded below 2^24 in float32 or 2^53 in float64:
    hpac.nn.integer.IntNet.in_dtype).

    buf: (B, C, 2R, P + 2p) the pixel Band's buffer; out: (B n, T C) in its dtype."""
    nb, ch = buf.shape[0], buf.shape[1]
    for b in range(nb):
        for i in range(n):
            o = out[b * n + i]
            for t in range(tap_row.shape[0]):
                rr, cc = top + tap_row[t], r0 + i + tap_col[t]
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
    on B patches: params(g), then write_pixels(g, q) once group g is known."""

    def __init__(self, net: IntNet, batch: int):
        cfg = net.cfg
        self.net, self.cfg, self.batch = net, cfg, batch
        self.sched = group_schedule(cfg.patch, cfg.kernel)
        reach, pad = self.sched.reach, cfg.kernel // 2
        dt = net.in_dtype
        self.in_taps = BandTaps(skew_kernel(net.in_w.to(dt), strict=True))
        self.pix = Band(batch, cfg.channels, reach, cfg.patch, pad, dt, torch.contiguous_format)
        self.pix_buf = self.pix.buf.numpy()
        w = self.in_taps.w.reshape(-1, self.in_taps.w.shape[2])  # (T C, D + CK)
        self.in_out = w.shape[1]
        # zero columns up to a multiple of 8: the product runs ~1.5x faster (79 -> 80 for RGB)
        self.in_w = torch.from_numpy(np.pad(w, ((0, 0), (0, -w.shape[1] % 8))))
        self.caches = [Band(batch, cfg.dim, reach + 1, cfg.patch, pad) for _ in net.blocks]
        self.taps = [BandTaps(blk.dw.band) for blk in net.blocks]

    @torch.no_grad()
    def params(self, g: int) -> torch.Tensor:
        """Integer mixture parameters of group ``g``: (B, n_g, n_params) float64."""
        b, reach = self.batch, self.sched.reach
        r0 = self.sched.first_row[g]
        n = self.sched.rows[g].numel()
        t = self.in_taps
        cols = np.empty((b * n, self.in_w.shape[0]), self.pix_buf.dtype)
        _band_gather(self.pix_buf, (g - reach) % reach, r0, n, t.row, t.col, cols)
        acc = np.empty((b * n, self.in_w.shape[1]), cols.dtype)
        torch.mm(torch.from_numpy(cols), self.in_w, out=torch.from_numpy(acc))
        x, skip = self.net.stem_out(acc[:, : self.in_out])
        ar = self.net.arith
        top = (g - reach) % (reach + 1)  # the band's oldest row in the ring
        for blk, cache, taps in zip(self.net.blocks, self.caches, self.taps):
            def depthwise(a, p, cache=cache, taps=taps):
                cache.write(g, r0, a.reshape(b, n, -1))
                out = np.empty((b, n, a.shape[1]), np.float32)
                _band_depthwise(cache.view, top, r0, n, taps.row, taps.col, taps.w[:, 0], out)
                return out.reshape(b * n, -1)

            x = gated_block(ar, blk, x, depthwise)
        return torch.from_numpy(self.net.tail(x, skip)).view(b, n, -1)

    def write_pixels(self, g: int, q: torch.Tensor) -> None:
        """Store group ``g``'s coded pixels as q (B, n_g, C) float64 (0 on padding)."""
        self.pix.write(g, self.sched.first_row[g], q.numpy())
