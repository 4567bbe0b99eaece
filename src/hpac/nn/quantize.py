"""The float network on the integer network's grids (torch: training and measuring).

* :func:`calibrate`: activation magnitudes of the float network, from which
  :func:`hpac.nn.integer.grids` makes the grids;
* :class:`FakeQuant` / :func:`fake_quant_forward`: quantisation-aware training, every tensor
  rounded where the integer network rounds it (straight-through gradients);
* :func:`float_state`, :func:`quantize`: a float network's integer form
  (:func:`hpac.nn.integer.export` takes its weights as numpy arrays);
* :func:`mixture`: integer parameters as the float mixture they stand for.

Coding never imports this module: the integer network itself (:mod:`hpac.nn.integer`) is numpy.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .architecture import LOG_SCALE_MAX, LOG_SCALE_MIN, gated_block
from .integer import export, grids, IntNet, load, qmax, QuantSpec
from .mixture import Mixture
from .model import depthwise_nhwc, FloatArith, HPACNet, plane_depthwise

F64 = torch.float64


def float_state(net: HPACNet) -> dict[str, np.ndarray]:
    """``net``'s weights as float32 numpy arrays, named as its state_dict (what
    :func:`hpac.nn.integer.export` and the weights files hold)."""
    return {k: v.detach().to("cpu", torch.float32).numpy() for k, v in net.state_dict().items()}


# ---- calibration: the float network's activation magnitudes -----------------------------------

class _Observer(FloatArith):
    """FloatArith that records |t| of every tensor the integer network puts on a grid, for
    the block whose names start with ``prefix`` (its gate and GELU have no module)."""

    def __init__(self, names: dict[int, str], seen: dict[str, list], prefix: str = ""):
        self.names, self.seen, self.prefix = names, seen, prefix

    def _see(self, key: str, t: torch.Tensor) -> None:
        v = t.detach().abs().flatten().float()
        if v.numel() > 1 << 18:
            v = v[torch.randint(0, v.numel(), (1 << 18,), generator=torch.Generator().manual_seed(len(self.seen.get(key, []))))]
        self.seen.setdefault(key, []).append(v)

    def norm(self, x, ln):
        y = ln(x)
        self._see(self.names[id(ln)], y)
        return y

    def linear(self, t, lin):
        y = lin(t)
        name = self.names[id(lin)]
        if name.endswith("to_av"):
            a, v = y.chunk(2, dim=-1)
            self._see(name + ".a", a)
            self._see(name + ".v", v)
        elif name.endswith("mlp_up"):
            self._see(name, y)
        return y

    def gate(self, u, v, p):
        self._see(self.names[id(p.dw)], u)
        g = F.silu(u) * v
        self._see(self.prefix + "gate", g)
        return g

    def linear_act(self, t, lin, table):
        y = F.gelu(self.linear(t, lin))
        self._see(self.prefix + "gelu", y)
        return y


def calibrate(net: HPACNet, batches, spec: QuantSpec = QuantSpec()) -> dict[str, float]:
    """Activation scales s_t (name -> float) from float runs of ``net`` over ``batches`` of
    normalised (B, C, P, P) inputs: the ``spec.quantile`` of |t| over the table's or grid's range."""
    names = {id(mod): name for name, mod in net.named_modules()}
    seen: dict[str, list] = {}
    observers = [_Observer(names, seen, f"blocks.{i}.") for i in range(len(net.blocks))]
    with torch.no_grad():
        for x in batches:
            h = net.stem(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)
            for blk, ar in zip(net.blocks, observers):
                h = gated_block(ar, blk, h, plane_depthwise)
            observers[0]._see("head_norm", net.head_norm(h))
            raw = net.head(net.head_norm(h))
            n = net.cfg.channels * net.cfg.mixtures
            observers[0]._see("coef", raw[..., 3 * n :])
    out = {}
    for name, parts in seen.items():
        v = torch.cat(parts)
        top = float(torch.quantile(v, spec.quantile)) if v.numel() else 1.0
        out[name] = max(top, 1e-6)
    return out


# ---- quantisation-aware training: the float network on the integer network's grids -------------

def _on_grid(t: torch.Tensor, step, lim: float) -> torch.Tensor:
    """t rounded onto ``step`` and clamped to +-lim steps; the gradient passes the rounding
    (straight-through) and stops at the clamp. ``step``: a float or a tensor broadcasting on t."""
    c = torch.maximum(torch.minimum(t, step * lim), -step * lim) if isinstance(step, torch.Tensor) \
        else t.clamp(-step * lim, step * lim)
    return c + (torch.round(c / step) * step - c).detach()


def _fake_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """w on its per-output-channel grid (:func:`quant_weight`'s step, float32), straight-through."""
    top = w.detach().abs().flatten(1).amax(1).clamp_min(1e-30)
    step = (top / qmax(bits)).reshape(-1, *([1] * (w.dim() - 1)))
    return _on_grid(w, step, qmax(bits))


class FakeQuant(FloatArith):
    """The float arithmetic of one block with every tensor put where the integer network puts
    it (:func:`load`): weights and activations rounded onto their grids, tables' outputs
    rounded, the residual on 2^-res_frac. Gradients pass the roundings (straight-through), so
    training with it fits the weights to the grids that code (``hpac train --qat``)."""

    def __init__(self, blk, grid: dict[str, torch.Tensor], spec: QuantSpec, prefix: str):
        self.spec, self.A, self.L = spec, qmax(spec.act_bits), qmax(spec.lut_bits)
        s = lambda k: float(grid[prefix + k][0])  # noqa: E731
        av = grid[prefix + "to_av.s"]
        d = len(av) // 2
        self.norm_s = {id(blk.norm1): s("norm1.s"), id(blk.norm2): s("norm2.s")}
        self.a_s, self.v_s = float(av[0]), float(av[d])
        self.dw_s, self.silu_s, self.gate_s = s("dw.s"), s("silu.s"), s("gate.s")
        self.up_s, self.gelu_s = s("mlp_up.s"), s("gelu.s")
        self.blk = blk

    def norm(self, x, ln):
        return _on_grid(ln(x), self.norm_s[id(ln)], self.A)

    def linear(self, t, lin):
        y = F.linear(t, _fake_weight(lin.weight, self.spec.wbits), lin.bias)
        if lin is self.blk.to_av:
            a, v = y.chunk(2, dim=-1)
            return torch.cat([_on_grid(a, self.a_s, self.A), _on_grid(v, self.v_s, self.A)], dim=-1)
        if lin is self.blk.mlp_up:
            return _on_grid(y, self.up_s, self.L)
        return _on_grid(y, 2.0 ** -self.spec.res_frac, self.spec.res_limit * 2.0 ** self.spec.res_frac)

    def depthwise(self, a, dw):
        """The masked depthwise conv with integer-grid weights (NHWC in and out)."""
        return depthwise_nhwc(a, _fake_weight(dw.masked_weight(), self.spec.wbits_dw), dw.bias)

    def gate(self, u, v, p):
        u = _on_grid(u, self.dw_s, self.L)
        return _on_grid(_on_grid(F.silu(u), self.silu_s, self.L) * v, self.gate_s, self.A)

    def linear_act(self, t, lin, table):
        return _on_grid(F.gelu(self.linear(t, lin)), self.gelu_s, self.A)

    def add(self, x, y):
        return (x + y).clamp(-self.spec.res_limit, self.spec.res_limit)


def fake_quant_forward(net: HPACNet, x: torch.Tensor, grid: dict[str, torch.Tensor], spec: QuantSpec,
                       bits: int) -> torch.Tensor:
    """:meth:`HPACNet.forward` as the integer network computes it (straight-through gradients):
    x (B, C, H, W) normalised ``bits``-bit pixels -> raw mixture parameters (B, H, W, n_params).
    The channel coefficients' tanh output (2^-coef_frac) is left unrounded: the loss applies tanh."""
    cfg = net.cfg
    edge, res = spec.wbits_edge, 2.0 ** -spec.res_frac
    ck = cfg.channels * cfg.mixtures
    mean_step = 2.0 ** -spec.mean_frac / (((1 << bits) - 1) / 2.0)  # 2^-mean_frac symbols, normalised
    xc = x.contiguous(memory_format=torch.channels_last)
    conv = lambda m: F.conv2d(xc, _fake_weight(m.masked_weight(), edge), m.bias, padding=m.padding)  # noqa: E731
    h = _on_grid(conv(net.stem), res, spec.res_limit / res).permute(0, 2, 3, 1)
    for i, blk in enumerate(net.blocks):
        ar = FakeQuant(blk, grid, spec, f"blocks.{i}.")
        h = gated_block(ar, blk, h, ar.depthwise)
    h = _on_grid(net.head_norm(h), float(grid["head_norm.s"][0]), qmax(spec.act_bits))
    raw = F.linear(h, _fake_weight(net.head.weight, edge), net.head.bias)
    hf = 2.0 ** -spec.head_frac
    big = float(1 << 40)
    parts = [_on_grid(raw[..., :ck], hf, 64 / hf),
             _on_grid(raw[..., ck : 2 * ck], mean_step, big)
             + _on_grid(conv(net.skip).permute(0, 2, 3, 1), mean_step, big),
             _on_grid(raw[..., 2 * ck : 3 * ck], hf, 64 / hf),
             _on_grid(raw[..., 3 * ck :], float(grid["coef.s"][0]), qmax(spec.lut_bits))]
    return torch.cat(parts, dim=-1)



def quantize(net: HPACNet, ranges: dict[str, float], bits: int, spec: QuantSpec = QuantSpec()) -> IntNet:
    """The integer form of ``net`` for ``bits``-bit symbols, its grids from ``ranges``."""
    return load(export(float_state(net), grids(ranges, net.cfg, spec), spec), net.cfg, spec, bits)


def mixture(params: np.ndarray | torch.Tensor, net: IntNet) -> Mixture:
    """Integer parameters (..., n_params) (:func:`hpac.nn.csi.plane_params`) -> the float
    :class:`Mixture` they stand for (normalised units; coefficients squashed). For measuring,
    not for coding."""
    cfg, spec = net.cfg, net.spec
    c, k = cfg.channels, cfg.mixtures
    n = c * k
    lead = params.shape[:-1]
    half = ((1 << net.bits) - 1) / 2.0
    p = torch.as_tensor(params).to(F64)
    logits = p[..., :n] * 2.0 ** -spec.head_frac
    means = p[..., n : 2 * n] * 2.0 ** -spec.mean_frac / half - 1.0
    ls = (p[..., 2 * n : 3 * n] * 2.0 ** -spec.head_frac).clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
    coefs = p[..., 3 * n :] * 2.0 ** -spec.coef_frac
    return Mixture(logits.reshape(*lead, c, k).float(), means.reshape(*lead, c, k).float(),
                   ls.reshape(*lead, c, k).float(), coefs.reshape(*lead, k, c * (c - 1) // 2).float())
