"""The HPAC network: a masked, gated ConvNet predicting a discrete logistic mixture per pixel.

Data flow of one P x P patch (NCHW, float32, pixels normalised to [-1, 1])::

    x (B,C,P,P) --stem: strict-masked kxk conv--> (B,D,P,P)
      --[GatedBlock] x N-->                        (B,D,P,P)
      --LayerNorm, 1x1 head-->                     (B,n_params,P,P)  (see hpac.nn.mixture)
    x --skip: strict-masked kxk linear conv--> added to the K component means of every channel

The skip path is a learned linear predictor from the causal neighbours straight to the means:
it carries absolute intensity past the LayerNorms and makes early training converge fast.

Masked convolutions after PixelCNN (van den Oord et al., ICML 2016). The coding order inside
a patch is the skewed diagonal of DLPR (Bai et al., TPAMI 2024), kept by CALLIC and HPAC: pixel (r, c) belongs to group
``g = c + 2r`` (3P-2 groups). A kernel tap at offset (dr, dc) points at group ``g + dc + 2dr``,
so the stem keeps taps with ``dc + 2dr < 0`` (strictly earlier groups) and every deeper
spatial conv keeps ``dc + 2dr <= 0`` (same-group features there depend only on earlier
groups already). Channels of one pixel are coded in order through the mixture's linear
channel coefficients, so the network itself never sees the current pixel.

GatedBlock ("content-aware convolutional gating": the MGCF block of CALLIC, Li, Bai et al.,
AAAI 2025, kept by HPAC, Li, Bai et al. 2025)::

    h = LN(x); a, v = W_av h; x = x + W_o( swish(DW_masked(a)) * v )
    x = x + W_down GELU(W_up LN(x))

This module is the training / reference ("naive full forward") implementation. Coding uses
the cache-then-select path in :mod:`hpac.nn.csi`, which computes the same function per group.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, asdict, replace

import torch
import torch.nn.functional as F
from torch import nn


INIT_LOG_SCALE = -4.0  # log of the initial logistic scale, normalised units (e^-4 * 127.5 ~ 2.3 levels)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters; one catalog row holds one of these."""

    channels: int = 3  # subpixels per pixel the model codes jointly (1 = gray, 3 = RGB)
    dim: int = 64  # feature channels D
    blocks: int = 3  # number of GatedBlocks N
    kernel: int = 7  # spatial kernel size k (stem and depthwise convs)
    mlp_ratio: int = 2  # MLP expansion
    mixtures: int = 5  # logistic mixture components K
    patch: int = 64  # patch size P (coding unit; 3P-2 sequential groups)

    @property
    def n_coefs(self) -> int:
        """Linear channel coefficients per mixture component (c' < c pairs)."""
        return self.channels * (self.channels - 1) // 2

    @property
    def n_params(self) -> int:
        """Head outputs per pixel: K * (3 C + C(C-1)/2)."""
        return self.mixtures * (3 * self.channels + self.n_coefs)

    def macs_per_pixel(self) -> int:
        """Multiply-accumulates of one forward pass, per pixel (masked taps only)."""
        d, k = self.dim, self.kernel
        strict = int(causal_mask(k, strict=True).sum())
        incl = int(causal_mask(k, strict=False).sum())
        stem = strict * self.channels * (d + self.channels * self.mixtures)  # stem + skip
        block = 2 * d * d + incl * d + d * d + 2 * self.mlp_ratio * d * d
        return stem + self.blocks * block + d * self.n_params

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def causal_mask(k: int, strict: bool) -> torch.Tensor:
    """(k, k) bool mask of kernel taps allowed by the skewed-diagonal order g = c + 2r."""
    off = torch.arange(k) - k // 2
    dr, dc = off[:, None], off[None, :]
    order = dc + 2 * dr
    return order < 0 if strict else order <= 0


class MaskedConv2d(nn.Conv2d):
    """Conv2d whose kernel is multiplied by a fixed causal mask on every forward."""

    def __init__(self, cin: int, cout: int, k: int, strict: bool, groups: int = 1):
        super().__init__(cin, cout, k, padding=k // 2, groups=groups)
        self.register_buffer("mask", causal_mask(k, strict).to(torch.float32)[None, None], persistent=False)
        with torch.no_grad():
            self.weight.mul_(self.mask)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, padding=self.padding, groups=self.groups)


def add_skip(raw: torch.Tensor, skip: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Add the linear prediction skip (..., C*K) to the means slice of raw (..., n_params)."""
    ck = cfg.channels * cfg.mixtures
    return torch.cat([raw[..., :ck], raw[..., ck : 2 * ck] + skip, raw[..., 2 * ck :]], dim=-1)


class GatedBlock(nn.Module):
    """MetaFormer block with masked convolutional gating and a 1x1 MLP (NHWC tensors)."""

    def __init__(self, d: int, k: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.to_av = nn.Linear(d, 2 * d)
        self.dw = MaskedConv2d(d, d, k, strict=False, groups=d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp_up = nn.Linear(d, mlp_ratio * d)
        self.mlp_down = nn.Linear(mlp_ratio * d, d)

    gate = gelu = None  # float arithmetic needs no tables (see FloatArith)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, D) -> (B, H, W, D)."""
        return gated_block(FLOAT, self, x, plane_depthwise)


def depthwise_nhwc(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A depthwise conv (weight (D, 1, k, k), same padding) of a whole plane, NHWC in and out."""
    # NHWC viewed as channels-last NCHW: the depthwise conv runs without layout copies
    x = a.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=weight.shape[0]).permute(0, 2, 3, 1)


def plane_depthwise(a: torch.Tensor, dw) -> torch.Tensor:
    """The masked depthwise conv of a whole plane, NHWC in and out."""
    return depthwise_nhwc(a, dw.masked_weight(), dw.bias)


class FloatArith:
    """The float arithmetic of :func:`gated_block` (training, reference): layers are the
    modules themselves. :mod:`hpac.nn.integer` gives the integer arithmetic with the same calls."""

    @staticmethod
    def norm(x, ln):
        return ln(x)

    @staticmethod
    def linear(t, lin):
        return lin(t)

    @staticmethod
    def gate(u, v, p):
        """silu(u) * v, u the depthwise conv's output of block ``p``."""
        return F.silu(u) * v

    def linear_act(self, t, lin, table):
        """gelu(lin(t)) (``table``: the integer arithmetic's GELU)."""
        return F.gelu(self.linear(t, lin))

    @staticmethod
    def split(t):
        """(..., 2D) -> its two halves (..., D)."""
        return t.chunk(2, dim=-1)

    @staticmethod
    def add(x, y):
        return x + y

    def residual(self, x, t, lin):
        """x + lin(t): the residual stream's update."""
        return self.add(x, self.linear(t, lin))


FLOAT = FloatArith()


def gated_block(ar, p, x: torch.Tensor, depthwise) -> torch.Tensor:
    """THE gated block, in arithmetic ``ar`` (FloatArith or hpac.nn.integer.IntArith), on ``p``
    (a GatedBlock or its integer form, same attribute names); x (..., D): NHWC or rows
    (the integer arithmetic's numpy rows (M, D)).
    ``depthwise(a, p.dw)`` applies the masked depthwise conv (whole plane, or the decoder's
    cached band)::

        a, v = W_av LN(x);  x += W_o( silu(DW(a)) * v );  x += W_down gelu(W_up LN(x))
    """
    a, v = ar.split(ar.linear(ar.norm(x, p.norm1), p.to_av))
    x = ar.residual(x, ar.gate(depthwise(a, p.dw), v, p), p.proj)
    return ar.residual(x, ar.linear_act(ar.norm(x, p.norm2), p.mlp_up, p.gelu), p.mlp_down)


class HPACNet(nn.Module):
    """Masked AR ConvNet mapping normalised pixels to mixture parameters.

    Args:
        cfg: architecture (see :class:`ModelConfig`).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.stem = MaskedConv2d(cfg.channels, d, cfg.kernel, strict=True)
        self.blocks = nn.ModuleList(GatedBlock(d, cfg.kernel, cfg.mlp_ratio) for _ in range(cfg.blocks))
        self.head_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.n_params)
        ck = cfg.channels * cfg.mixtures
        with torch.no_grad():  # start near "skip prediction, scale ~2 levels": Adam would need
            self.head.weight.mul_(0.01)  # thousands of steps to walk there from a random head
            self.head.bias.zero_()
            self.head.bias[2 * ck : 3 * ck] = INIT_LOG_SCALE
        self.skip = MaskedConv2d(cfg.channels, ck, cfg.kernel, strict=True)
        with torch.no_grad():  # start as the mean of the left and upper neighbours
            self.skip.weight.zero_()
            self.skip.bias.zero_()
            mid = cfg.kernel // 2
            for c in range(cfg.channels):
                self.skip.weight[c * cfg.mixtures : (c + 1) * cfg.mixtures, c, mid, mid - 1] = 0.5
                self.skip.weight[c * cfg.mixtures : (c + 1) * cfg.mixtures, c, mid - 1, mid] = 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) float in [-1, 1] -> raw mixture params (B, H, W, n_params)."""
        xc = x.contiguous(memory_format=torch.channels_last)
        h = self.stem(xc).permute(0, 2, 3, 1)
        for blk in self.blocks:
            h = blk(h)
        raw = self.head(self.head_norm(h))
        return add_skip(raw, self.skip(xc).permute(0, 2, 3, 1), self.cfg)

    def with_patch(self, patch: int) -> "HPACNet":
        """The same network (shared weights) coding P x P patches: P is not a weight, so files
        name it and any P codes with any weights."""
        if patch == self.cfg.patch:
            return self
        other = copy.copy(self)  # shares parameters, buffers and submodules
        other.cfg = replace(self.cfg, patch=patch)
        return other

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
