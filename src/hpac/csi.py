"""CSI: Cache-then-Select Inference over a batch of P x P patches.

Coding walks the 3P-2 skewed-diagonal groups in order. At group ``g`` only the positions of
that group (in every patch of the batch) are computed, through every layer:

* the stem gathers its strict-masked taps from the cached *pixel* map;
* each block writes ``a = W_a LN(x)`` of the new positions into its cache, then gathers its
  inclusive-masked depthwise taps from that cache (same-group taps included: they were
  written just before), and runs the 1x1 layers on the selected rows only;
* the head turns the selected rows into mixture parameters.

After the channels of group ``g`` are coded, :meth:`CSIStepper.write_pixels` stores them in
the pixel cache. A whole patch therefore costs one forward pass, spread over 3P-2 steps.

Caches are channels-last with a ``k//2`` zero border, flattened: (B, (P+2p)^2, D). The
positions of one group lie on the line ``c = g - 2r``, so in the flattened cache they are
equally spaced (stride ``P + 2p - 2``), and so are the neighbours at any fixed kernel offset:
every depthwise tap is a zero-copy strided view, accumulated with one fused multiply-add.
Encoder and decoder both run this exact code with the same shapes, so they compute
bit-identical parameters; :func:`hpac.model.HPACNet.forward` is the reference it must match
to float tolerance.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from .model import HPACNet, add_skip, causal_mask


@dataclass(frozen=True)
class GroupSchedule:
    """Static index tables of the skewed-diagonal order for one (P, k).

    Attributes:
        rows, cols: per group, (n_g,) int64 coordinates inside the patch.
        pos: per group, (n_g,) flat index into the padded cache.
        stem_idx / dw_idx: per group, (n_g * taps,) flat cache indices of the masked taps.
    """

    patch: int
    kernel: int
    rows: tuple[torch.Tensor, ...]
    cols: tuple[torch.Tensor, ...]
    pos: tuple[torch.Tensor, ...]
    stem_idx: tuple[torch.Tensor, ...]
    dw_offsets: tuple[int, ...]  # flat cache offset of each inclusive-mask tap

    @property
    def stride(self) -> int:
        """Flat distance between consecutive positions of one group."""
        return self.patch + 2 * (self.kernel // 2) - 2

    @property
    def groups(self) -> int:
        return len(self.rows)

    @property
    def cache_len(self) -> int:
        return (self.patch + 2 * (self.kernel // 2)) ** 2


def tap_offsets(k: int, strict: bool) -> list[tuple[int, int]]:
    """(dr, dc) of the kept taps, in kernel raster order."""
    m = causal_mask(k, strict)
    return [(i - k // 2, j - k // 2) for i in range(k) for j in range(k) if m[i, j]]


@lru_cache(maxsize=8)
def group_schedule(patch: int, kernel: int) -> GroupSchedule:
    pad = kernel // 2
    wp = patch + 2 * pad
    strict = torch.tensor([dr * wp + dc for dr, dc in tap_offsets(kernel, True)])
    incl = torch.tensor([dr * wp + dc for dr, dc in tap_offsets(kernel, False)])
    rows, cols, pos, sidx = [], [], [], []
    for g in range(3 * patch - 2):
        r = torch.arange(max(0, (g - patch + 2) // 2), min(patch - 1, g // 2) + 1)
        c = g - 2 * r
        p = (r + pad) * wp + (c + pad)
        rows.append(r)
        cols.append(c)
        pos.append(p)
        sidx.append((p[:, None] + strict[None, :]).reshape(-1))
    return GroupSchedule(patch, kernel, tuple(rows), tuple(cols), tuple(pos), tuple(sidx), tuple(incl.tolist()))


class CSIStepper:
    """Runs an :class:`HPACNet` group by group on a batch of B patches.

    Args:
        net: the (possibly adapter-merged) network; its weights are read, never changed.
        batch: number of patches B coded together.
    """

    def __init__(self, net: HPACNet, batch: int):
        cfg = net.cfg
        self.cfg, self.batch = cfg, batch
        self.sched = group_schedule(cfg.patch, cfg.kernel)
        k = cfg.kernel
        sm = causal_mask(k, True).reshape(-1)
        im = causal_mask(k, False).reshape(-1)
        with torch.no_grad():
            w = net.stem.weight.detach().reshape(cfg.dim, cfg.channels, k * k)[:, :, sm]  # (D, C, Ts)
            self.stem_w = w.permute(0, 2, 1).reshape(cfg.dim, -1).contiguous()  # (D, Ts*C)
            self.stem_b = net.stem.bias.detach()
            ws = net.skip.weight.detach().reshape(-1, cfg.channels, k * k)[:, :, sm]
            self.skip_w = ws.permute(0, 2, 1).reshape(ws.shape[0], -1).contiguous()  # (C*K, Ts*C)
            self.skip_b = net.skip.bias.detach()
            self.blocks = []
            for blk in net.blocks:
                dw = blk.dw.weight.detach().reshape(cfg.dim, k * k)[:, im].t().contiguous()  # (Ti, D)
                self.blocks.append(dict(
                    n1=(blk.norm1.weight.detach(), blk.norm1.bias.detach()),
                    av=(blk.to_av.weight.detach(), blk.to_av.bias.detach()),
                    dw=(dw, blk.dw.bias.detach()),
                    proj=(blk.proj.weight.detach(), blk.proj.bias.detach()),
                    n2=(blk.norm2.weight.detach(), blk.norm2.bias.detach()),
                    up=(blk.mlp_up.weight.detach(), blk.mlp_up.bias.detach()),
                    down=(blk.mlp_down.weight.detach(), blk.mlp_down.bias.detach()),
                ))
            self.head_norm = (net.head_norm.weight.detach(), net.head_norm.bias.detach())
            self.head = (net.head.weight.detach(), net.head.bias.detach())
        n = self.sched.cache_len
        self.pix = torch.zeros(batch, n, cfg.channels)
        self.caches = [torch.zeros(batch, n, cfg.dim) for _ in net.blocks]

    def _line(self, cache: torch.Tensor, g: int, offset: int) -> torch.Tensor:
        """(B, n_g, D) strided view of the cache at group g's positions shifted by ``offset``."""
        d = cache.shape[2]
        first = int(self.sched.pos[g][0]) + offset
        return cache.as_strided((self.batch, self.sched.pos[g].numel(), d),
                                (cache.stride(0), self.sched.stride * d, 1), first * d)

    @torch.no_grad()
    def params(self, g: int) -> torch.Tensor:
        """Raw mixture parameters of group ``g``: (B, n_g, n_params) float32."""
        d = self.cfg.dim
        b = self.batch
        n = self.sched.pos[g].numel()
        taps = self.pix.index_select(1, self.sched.stem_idx[g]).reshape(b * n, -1)
        x = F.linear(taps, self.stem_w, self.stem_b)  # (B*n, D)
        offsets = self.sched.dw_offsets
        for blk, cache in zip(self.blocks, self.caches):
            a, v = F.linear(F.layer_norm(x, (d,), *blk["n1"]), *blk["av"]).chunk(2, dim=-1)
            self._line(cache, g, 0).copy_(a.reshape(b, n, d))
            w, bias = blk["dw"]
            acc = self._line(cache, g, offsets[0]) * w[0]
            for t in range(1, len(offsets)):  # fixed tap order: same sums on both sides
                acc.addcmul_(self._line(cache, g, offsets[t]), w[t])
            a = acc.reshape(b * n, d) + bias
            x = x + F.linear(F.silu(a) * v, *blk["proj"])
            h = F.gelu(F.linear(F.layer_norm(x, (d,), *blk["n2"]), *blk["up"]))
            x = x + F.linear(h, *blk["down"])
        raw = F.linear(F.layer_norm(x, (d,), *self.head_norm), *self.head)
        raw = add_skip(raw, F.linear(taps, self.skip_w, self.skip_b), self.cfg)
        return raw.reshape(b, n, -1)

    def write_pixels(self, g: int, x_norm: torch.Tensor) -> None:
        """Store the coded, normalised pixels of group ``g``: x_norm (B, n_g, C)."""
        self.pix.index_copy_(1, self.sched.pos[g], x_norm)
