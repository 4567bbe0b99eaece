"""Portable arithmetic: model probabilities that are the same on every machine.

The float32 coding path (:mod:`hpac.csi`, :mod:`hpac.afc`) gives the same tables only where
the float kernels agree bit for bit (docs/determinism.md): matrix products and reductions
sum in an order each CPU's kernels choose, and exp, sigmoid, GELU and SiLU come from
vectorised approximations that differ between instruction sets (and, inside one machine,
between the vector body and the scalar tail of a tensor). This module computes the same
model with two rules that make every result a function of the inputs alone:

* **Sums are exact.** Every operand of a matrix product or convolution sits on a
  fixed-point grid (activations on ``2^-ACT_BITS`` within +-ACT_LIMIT, weights with
  WEIGHT_BITS significant bits, biases on the product grid), so every partial sum is an
  integer multiple of one grid step below 2^53 and float64 holds it exactly: any summation
  order gives the same number. The residual stream is rounded to ``2^-RES_BITS`` so that
  LayerNorm's sums are exact too.
* **Everything else is IEEE basic arithmetic** (+, -, *, /, sqrt, rounding: correctly
  rounded everywhere) in a fixed sequence, on elementwise tensors. exp and log are
  evaluated here by range reduction and polynomials built from those operations; sigmoid,
  SiLU, GELU (erf), tanh and softmax from them; sums over mixture components run in a
  fixed order.

Rounding the network's intermediate values to these grids changes the model's outputs by
far less than one symbol step (measured in docs/determinism.md), and encoder and decoder
both use this path, so it costs compression only through that change.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from . import afc
from .csi import Band, group_schedule, skew_kernel
from .model import HPACNet, add_skip

ACT_BITS = 16  # fraction bits of matrix-product inputs
ACT_LIMIT = 2048.0  # their magnitude bound (clamped)
RES_BITS = 24  # fraction bits of the residual stream (LayerNorm input)
PIX_BITS = 20  # fraction bits of normalised pixels (distinct for every 16-bit symbol)
WEIGHT_BITS = 15  # significant bits of each weight tensor (relative to its largest entry)
DW_BITS = 9  # significant bits of each depthwise kernel channel (float32 convolutions, below)
PIECE_BITS = 9  # the depthwise input (ACT_BITS + 11 bits) is convolved as three pieces of 9 bits
VAR_BITS = 12  # fraction bits of the centred values LayerNorm's variance sums
LN_EPS = 1e-5  # torch.nn.LayerNorm's default, as the network was trained

F64 = torch.float64
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact for |k| < 2^11
_LN2_LO = 1.90821492927058770002e-10
_LOG2E = 1.4426950408889634
# Taylor coefficients (ln 2)^n / n! of 2^f = e^(f ln 2), highest power first (Horner). Written
# out: they are part of the format, and libm's log and pow may round differently elsewhere.
_EXP2_F64 = (4.44553827187081e-10, 7.054911620801121e-09, 1.0178086009239696e-07, 1.3215486790144305e-06, 1.5252733804059838e-05, 0.00015403530393381606, 0.0013333558146428441, 0.009618129107628477, 0.055504108664821576, 0.2402265069591007, 0.6931471805599453, 1.0)
_EXP2_F32 = (0.00015403530393381606, 0.0013333558146428441, 0.009618129107628477, 0.055504108664821576, 0.2402265069591007, 0.6931471805599453, 1.0)
# AFC's logistic CDFs: 4e-5 relative is far below what a table entry's error costs in bits
_EXP2_TABLES = (0.009618129107628477, 0.055504108664821576, 0.2402265069591007, 0.6931471805599453, 1.0)


# ---- elementwise functions from correctly rounded operations only ---------------------------

def exp(x: torch.Tensor, coef: tuple[float, ...] | None = None) -> torch.Tensor:
    """e^x for float32 or float64 x, clamped to the range where e^x is a normal number, as
    2^k 2^f with k = round(x log2 e) and 2^f from its Taylor polynomial (|f| <= 1/2).

    Relative error below 1e-12 in float64 and 5e-6 in float32: far below what the activation
    grid and the float32 probability tables resolve, and the same on every machine. ``coef``
    replaces the polynomial (highest power first)."""
    wide = x.dtype == F64
    y = x.clamp(-700.0, 700.0) if wide else x.clamp(-86.0, 86.0)
    y = y.mul_(_LOG2E)
    k = torch.round(y)
    f = y.sub_(k)
    coef = coef or (_EXP2_F64 if wide else _EXP2_F32)
    p = torch.full_like(f, coef[0])
    for c in coef[1:]:
        p.mul_(f).add_(c)
    if wide:  # 2^k, built from its bits
        two_k = ((k.to(torch.int64) + 1023) << 52).view(F64)
    else:
        two_k = ((k.to(torch.int32) + 127) << 23).view(torch.float32)
    return p.mul_(two_k)


def log(x: torch.Tensor) -> torch.Tensor:
    """ln x for float64 x > 0; absolute error below 1e-14."""
    m, e = torch.frexp(x)  # x = m 2^e, m in [0.5, 1)
    small = m < math.sqrt(0.5)
    m = torch.where(small, m * 2.0, m)
    e = (e - small.to(e.dtype)).to(F64)
    t = (m - 1.0) / (m + 1.0)  # |t| <= 0.172
    t2 = t * t
    s = torch.full_like(t, 1.0 / 19.0)
    for n in range(17, 0, -2):
        s = s * t2 + 1.0 / n
    return (2.0 * t * s + e * _LN2_LO) + e * _LN2_HI


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return exp(-x).add_(1.0).reciprocal_()


def silu(x: torch.Tensor) -> torch.Tensor:
    return exp(-x).add_(1.0).reciprocal_().mul_(x)


def tanh(x: torch.Tensor) -> torch.Tensor:
    return 2.0 * sigmoid(2.0 * x) - 1.0


_ERF = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)  # Abramowitz-Stegun 7.1.26


def gelu(x: torch.Tensor) -> torch.Tensor:
    """x Phi(x) with erf to 1.5e-7 (7.1.26): far below the activation grid."""
    z = x.abs().mul_(1.0 / math.sqrt(2.0))
    t = (z * 0.3275911).add_(1.0).reciprocal_()
    p = torch.full_like(t, _ERF[4])
    for a in _ERF[3::-1]:
        p.mul_(t).add_(a)
    tail = p.mul_(t).mul_(exp(z.mul_(z).neg_()))  # 1 - erf(|x|)
    return torch.where(x < 0, tail, 2.0 - tail).mul_(x).mul_(0.5)


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis, summed in index order."""
    e = exp(logits - logits.amax(-1, keepdim=True))
    total = e[..., 0]
    for k in range(1, e.shape[-1]):
        total = total + e[..., k]
    return e / total[..., None]


def _pow2(n: int) -> float:
    """2^n, exactly (ldexp, not pow: no libm approximation involved)."""
    return math.ldexp(1.0, n)


def fixed(x: torch.Tensor, frac_bits: int, limit: float | None = None) -> torch.Tensor:
    """x rounded to a multiple of 2^-frac_bits (half to even), clamped to +-limit first."""
    y = x.clamp(-limit, limit) if limit is not None else x.clone()
    return y.mul_(_pow2(frac_bits)).round_().mul_(_pow2(-frac_bits))


def act(x: torch.Tensor) -> torch.Tensor:
    """A matrix-product input: on the activation grid."""
    return fixed(x, ACT_BITS, ACT_LIMIT)


def weight_exponent(w: torch.Tensor) -> int:
    """e such that w 2^e has at most WEIGHT_BITS significant bits at its largest entry."""
    top = float(w.abs().max())
    if top == 0.0:
        return 0
    return WEIGHT_BITS - math.frexp(top)[1]


def quant_weight(w: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(w on its grid as float64, e): w rounded to a multiple of 2^-e."""
    e = weight_exponent(w)
    return fixed(w.detach().to(F64), e), e


def quant_linear(weight: torch.Tensor, bias: torch.Tensor, in_bits: int = ACT_BITS) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight on its grid and bias on the grid of the products (inputs on 2^-in_bits)."""
    w, e = quant_weight(weight)
    return w, fixed(bias.detach().to(F64), e + in_bits)


def layer_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last axis of x (on the residual grid), deterministic everywhere."""
    d = x.shape[-1]
    mean = x.sum(-1, keepdim=True) / d  # the sum is exact
    c = x - mean
    q = torch.round(c * _pow2(VAR_BITS)).to(torch.int64)  # |q| <= 2^24: int64 sums its squares exactly
    var = (q * q).sum(-1, keepdim=True).to(F64) * (_pow2(-2 * VAR_BITS) / d)
    return c / torch.sqrt(var + LN_EPS) * gamma + beta


def normalise(sym: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer symbols -> float64 in [-1, 1] on the pixel grid."""
    return fixed(sym.to(F64) * (2.0 / (2**bits - 1)) - 1.0, PIX_BITS)


def _depthwise(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The masked depthwise kernel as float32 integers of DW_BITS bits per channel, skewed;
    the float64 factor (1, D, 1) that scales a channel's integer sum back (with the activation
    grid); the float64 bias (1, D, 1).

    A channel sums at most k*k products of a DW_BITS-bit weight and a PIECE_BITS-bit piece:
    below 2^24, so float32 holds every partial sum exactly and the convolution's order of
    summation cannot matter. float32 convolutions are 4-6x faster here than float64 ones."""
    w = weight.detach().to(F64)
    top = w.abs().flatten(1).amax(1)
    e = torch.tensor([DW_BITS - math.frexp(float(t))[1] if t > 0 else 0 for t in top], dtype=torch.int64)
    ints = torch.round(w * torch.tensor([_pow2(int(k)) for k in e], dtype=F64)[:, None, None, None])
    scale = torch.tensor([_pow2(-int(k) - ACT_BITS) for k in e], dtype=F64)
    return skew_kernel(ints.to(torch.float32), strict=False), scale[None, :, None], bias.detach().to(F64)[None, :, None]


def _pieces(a: torch.Tensor) -> torch.Tensor:
    """(M, D) values on the activation grid -> (3, M, D) float32 integers hi, mid, lo of
    PIECE_BITS bits with a 2^ACT_BITS = hi 2^18 + mid 2^9 + lo."""
    q = a * _pow2(ACT_BITS)
    hi = torch.floor(q * _pow2(-2 * PIECE_BITS))
    rest = q - hi * _pow2(2 * PIECE_BITS)
    mid = torch.floor(rest * _pow2(-PIECE_BITS))
    lo = rest - mid * _pow2(PIECE_BITS)
    return torch.stack([hi, mid, lo]).to(torch.float32)


class ExactStepper:
    """:class:`hpac.csi.CSIStepper` in portable arithmetic: same schedule, same caches, same
    interface; the raw mixture parameters come back as float64."""

    def __init__(self, net: HPACNet, batch: int):
        torch.set_flush_denormal(False)  # IEEE subnormals (the default), whatever the caller set
        cfg = net.cfg
        self.cfg, self.batch = cfg, batch
        self.sched = group_schedule(cfg.patch, cfg.kernel)
        reach, pad = self.sched.reach, cfg.kernel // 2
        with torch.no_grad():
            w = torch.cat([net.stem.weight * net.stem.mask, net.skip.weight * net.skip.mask])
            qw, e = quant_weight(w)
            self.in_w = skew_kernel(qw, strict=True)
            self.in_b = fixed(torch.cat([net.stem.bias, net.skip.bias]).to(F64), e + PIX_BITS)
            self.blocks = []
            for blk in net.blocks:
                self.blocks.append(dict(
                    n1=(blk.norm1.weight.detach().to(F64), blk.norm1.bias.detach().to(F64)),
                    av=quant_linear(blk.to_av.weight, blk.to_av.bias),
                    dw=_depthwise(blk.dw.weight * blk.dw.mask, blk.dw.bias),
                    proj=quant_linear(blk.proj.weight, blk.proj.bias),
                    n2=(blk.norm2.weight.detach().to(F64), blk.norm2.bias.detach().to(F64)),
                    up=quant_linear(blk.mlp_up.weight, blk.mlp_up.bias),
                    down=quant_linear(blk.mlp_down.weight, blk.mlp_down.bias),
                ))
            self.head_norm = (net.head_norm.weight.detach().to(F64), net.head_norm.bias.detach().to(F64))
            self.head = quant_linear(net.head.weight, net.head.bias)
        # float64 convolutions run fastest on contiguous (NCHW) tensors
        self.in_w = self.in_w.contiguous()
        self.pix = Band(batch, cfg.channels, reach, cfg.patch, pad, F64, torch.contiguous_format)
        # the depthwise caches hold three float32 pieces of each value, stacked on the batch axis
        self.caches = [Band(3 * batch, cfg.dim, reach + 1, cfg.patch, pad) for _ in net.blocks]

    @torch.no_grad()
    def params(self, g: int) -> torch.Tensor:
        """Raw mixture parameters of group ``g``: (B, n_g, n_params) float64."""
        d, b = self.cfg.dim, self.batch
        reach = self.sched.reach
        r0 = self.sched.first_row[g]
        n = self.sched.rows[g].numel()
        band = self.pix.band(g - 1, reach, r0, n)
        y = F.conv2d(band, self.in_w, self.in_b)  # exact: pixels and weights on their grids
        y = y.permute(0, 2, 3, 1).reshape(b * n, -1)
        x, skip = fixed(y[:, :d], RES_BITS, ACT_LIMIT), y[:, d:]
        for blk, cache in zip(self.blocks, self.caches):
            a, v = F.linear(act(layer_norm(x, *blk["n1"])), *blk["av"]).chunk(2, dim=-1)
            cache.write(g, r0, _pieces(act(a)).reshape(3 * b, n, d))
            w, scale, bias = blk["dw"]
            part = F.conv2d(cache.band(g, reach + 1, r0, n), w, groups=d).to(F64)  # (3B, D, 1, n), exact
            hi, mid, lo = part.reshape(3, b, d, n).unbind(0)
            a = ((hi * _pow2(2 * PIECE_BITS) + mid * _pow2(PIECE_BITS)) + lo) * scale + bias
            a = a.permute(0, 2, 1).reshape(b * n, d)
            # the gates in float32: IEEE operations are deterministic in any precision, and the
            # trained float32 network is what these values approximate
            gate = silu(a.to(torch.float32)).to(F64) * v
            x = fixed(x + F.linear(act(gate), *blk["proj"]), RES_BITS, ACT_LIMIT)
            h = gelu(F.linear(act(layer_norm(x, *blk["n2"])), *blk["up"]).to(torch.float32))
            x = fixed(x + F.linear(act(h.to(F64)), *blk["down"]), RES_BITS, ACT_LIMIT)
        raw = F.linear(act(layer_norm(x, *self.head_norm)), *self.head)
        return add_skip(raw, skip, self.cfg).reshape(b, n, -1)

    def write_pixels(self, g: int, x_norm: torch.Tensor) -> None:
        """Store the coded, normalised pixels of group ``g``: x_norm (B, n_g, C) float64 on the pixel grid."""
        self.pix.write(g, self.sched.first_row[g], x_norm)


# ---- AFC (hpac.afc) in portable arithmetic ----------------------------------------------------

def _ksum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum over mixture components (axis ``dim``) in index order."""
    total = x.select(dim, 0)
    for k in range(1, x.shape[dim]):
        total = total + x.select(dim, k)
    return total


def symbol_units(logits: torch.Tensor, mean_n: torch.Tensor, log_s: torch.Tensor, bits: int):
    """:func:`hpac.afc.symbol_units`, float64, deterministic."""
    half = ((1 << bits) - 1) / 2.0
    return softmax(logits), (mean_n + 1.0) * half, exp(log_s) * half


def next_pow2(x: torch.Tensor) -> torch.Tensor:
    """Smallest power of two >= x for int64 x >= 1 (exact: from the float's exponent bits)."""
    _, e = torch.frexp((x - 1).to(F64))  # x - 1 = m 2^e with m in [0.5, 1): 2^e > x - 1
    return torch.where(x <= 1, torch.ones_like(x), torch.ones_like(x) << e.to(torch.int64))


def plan_windows(w, mu, s, bits: int, low: int = 0):
    """:func:`hpac.afc.plan_windows` with deterministic sums, logarithms and powers of two."""
    return afc.plan_windows(w, mu, s, bits, low, lambda t: _ksum(t, -1), log, next_pow2)


def mass_below(low: int, w: torch.Tensor, mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(n,) float64 mixture mass below symbol ``low``."""
    return _ksum(sigmoid((low - 0.5 - mu) / s) * w, 1)


def row_sums(t: torch.Tensor) -> torch.Tensor:
    """(n, E) -> (n,) sums of each row in index order."""
    return torch.cumsum(t, dim=1)[:, -1]  # a scan: one order on every machine


def tables(start, step, n_bins, bits: int, w: torch.Tensor, mu: torch.Tensor, s: torch.Tensor,
           escape: bool, low: int = 0):
    """:func:`hpac.afc._masses` in portable arithmetic, all buckets of one call in one pass.

    Args:
        start: (n,) numpy int64 first symbols; step: (n,) numpy int64 bin sizes, or 1;
        n_bins: (n,) numpy int64 bins per row, ascending (rows of a bucket are a run);
        w, mu, s: (n, K) float64 mixture in symbol units.
    Yields:
        (first, end, table) per run of equal ``n_bins``: the float32 table (end - first,
        n_bins [+1]) of those rows. Every entry is computed elementwise (float32 logistic
        CDFs from :func:`exp`, sums over components in index order), so it does not depend
        on which rows share the pass.
    """
    f32 = torch.float32
    inv = 1.0 / s
    a = (((mu + 0.5) - torch.from_numpy(start).to(F64)[:, None]) * inv).to(f32)  # -z at the first edge
    b = (-inv if isinstance(step, int) else torch.from_numpy(step).to(F64)[:, None] * -inv).to(f32)
    ends = np.cumsum(n_bins + 1)
    begins = ends - (n_bins + 1)
    row = torch.from_numpy(np.repeat(np.arange(n_bins.size), n_bins + 1))
    j = torch.from_numpy((np.arange(int(ends[-1])) - np.repeat(begins, n_bins + 1)).astype(np.float32))
    neg_z = (j[:, None] * b[row]).add_(a[row])  # (edges of all rows, K)
    cdf = exp(neg_z, _EXP2_TABLES).add_(1.0).reciprocal_().mul_(w.to(f32)[row])
    big = _ksum(cdf, 1).numpy()  # the mixture CDF at every edge
    if low == 0:
        big[begins[start <= 0]] = 0.0
    big[ends[start + n_bins * step >= (1 << bits)] - 1] = 1.0
    below_low = mass_below(low, w, mu, s).to(f32).numpy() if escape and low != 0 else None
    for first, end in afc._runs(n_bins):
        edges = big[begins[first] : ends[end - 1]].reshape(end - first, int(n_bins[first]) + 1)
        yield first, end, afc.cdf_to_table(edges, escape, low, None if below_low is None else below_low[first:end],
                                           row_sums)
