"""The HPAC network: a masked, gated ConvNet predicting a discrete logistic mixture per pixel.

Data flow of one P x P patch (NCHW, float32, pixels normalised to [-1, 1])::

    x (B,C,P,P) --stem: strict-masked kxk conv--> (B,D,P,P)
      --[GatedBlock] x N-->                        (B,D,P,P)
      --LayerNorm, 1x1 head-->                     (B,n_params,P,P)  (see hpac.nn.mixture)
    x --skip: strict-masked kxk linear conv--> added to the K component means of every channel

The skip path is a learned linear predictor from the causal neighbours straight to the means:
it carries absolute intensity past the LayerNorms and makes early training converge fast.

The masks, the coding order and the gated block are :mod:`hpac.nn.architecture`'s.

This module is the training / reference ("naive full forward") implementation. Coding uses
the cache-then-select path in :mod:`hpac.nn.csi`, which computes the same function per group.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import ModelConfig, causal_mask, gated_block


INIT_LOG_SCALE = -4.0  # log of the initial logistic scale, normalised units (e^-4 * 127.5 ~ 2.3 levels)


class MaskedConv2d(nn.Conv2d):
    """Conv2d whose kernel is multiplied by a fixed causal mask on every forward."""

    def __init__(self, cin: int, cout: int, k: int, strict: bool, groups: int = 1):
        super().__init__(cin, cout, k, padding=k // 2, groups=groups)
        self.register_buffer("mask", torch.from_numpy(causal_mask(k, strict)).to(torch.float32)[None, None],
                             persistent=False)
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

    def linear_split(self, t, lin):
        """lin(t) (..., 2D) as its two halves (..., D): the block's a and v."""
        return self.linear(t, lin).chunk(2, dim=-1)

    @staticmethod
    def add(x, y):
        return x + y

    def residual(self, x, t, lin):
        """x + lin(t): the residual stream's update."""
        return self.add(x, self.linear(t, lin))


FLOAT = FloatArith()


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

    @classmethod
    def from_state(cls, cfg: ModelConfig, state) -> "HPACNet":
        """The network of ``cfg`` with the float32 weights ``state`` (numpy arrays named as its
        state_dict: :func:`hpac.zoo.weights.load_weights`), in eval mode."""
        net = cls(cfg)
        net.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        return net.eval()

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
