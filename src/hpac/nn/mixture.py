"""Discrete logistic mixture with linear channel conditioning (PixelCNN++: Salimans et al.,
ICLR 2017; as DLPR codes channels).

Raw head output per pixel, last axis of length ``K * (3C + C(C-1)/2)``::

    [ logits (C,K) | means (C,K) | log_scales (C,K) | coefs (K, C(C-1)/2) ]

Channel ``c`` has its own mixture weights; its component means are shifted by
``sum_{c'<c} tanh(coef[k, pair(c, c')]) * x_{c'}`` where ``x_{c'}`` are the already coded,
normalised values of the same pixel. Everything here is in the normalised domain
``x_n = 2 x / (2^b - 1) - 1``; one symbol step is ``2 / (2^b - 1)`` wide.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .architecture import LOG_SCALE_MAX, LOG_SCALE_MIN


class Mixture(NamedTuple):
    """Per-channel mixture parameters; tensors shaped (..., C, K) except coefs (..., K, C(C-1)/2)."""

    logits: torch.Tensor
    means: torch.Tensor
    log_scales: torch.Tensor
    coefs: torch.Tensor


def split_params(raw: torch.Tensor, channels: int, mixtures: int, tanh=torch.tanh) -> Mixture:
    """Split raw head output (..., n_params) into a :class:`Mixture` (``tanh`` squashes the
    channel coefficients)."""
    c, k = channels, mixtures
    lead = raw.shape[:-1]
    n = c * k
    logits = raw[..., :n].reshape(*lead, c, k)
    means = raw[..., n : 2 * n].reshape(*lead, c, k)
    log_scales = raw[..., 2 * n : 3 * n].reshape(*lead, c, k).clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
    coefs = tanh(raw[..., 3 * n :].reshape(*lead, k, c * (c - 1) // 2))
    return Mixture(logits, means, log_scales, coefs)


def conditioned_means(mix: Mixture, x_norm: torch.Tensor, c: int) -> torch.Tensor:
    """Component means of channel ``c`` (..., K) given normalised values x_norm (..., >=c)."""
    mean = mix.means[..., c, :]
    base = c * (c - 1) // 2
    for cp in range(c):
        mean = mean + mix.coefs[..., base + cp] * x_norm[..., cp : cp + 1]
    return mean


def normalise(sym: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer symbols in [0, 2^bits) -> float32 in [-1, 1]."""
    return sym.to(torch.float32) * (2.0 / (2**bits - 1)) - 1.0


def nll_bits(raw: torch.Tensor, sym: torch.Tensor, bits: int, channels: int, mixtures: int) -> torch.Tensor:
    """Exact code length in bits of each subpixel under the discretised mixture.

    Args:
        raw: (..., n_params) head output.
        sym: (..., C) integer symbols in [0, 2^bits).
    Returns:
        (..., C) float32 bits.
    """
    return mixture_bits(split_params(raw, channels, mixtures), sym, bits)


def mixture_bits(mix: Mixture, sym: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`nll_bits` of a split mixture (coefs already squashed): (..., C) float bits."""
    channels = mix.logits.shape[-2]
    xn = normalise(sym, bits)
    half = 1.0 / (2**bits - 1)
    out = []
    for c in range(channels):
        mean = conditioned_means(mix, xn, c)
        ls = mix.log_scales[..., c, :]
        x = xn[..., c : c + 1]
        centered = x - mean
        inv_s = torch.exp(-ls)
        plus_in = inv_s * (centered + half)
        min_in = inv_s * (centered - half)
        log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in): bin of symbol 0
        log_sf_min = -F.softplus(min_in)  # log(1 - sigmoid(min_in)): bin of the top symbol
        log_delta = _log_sigmoid_diff(plus_in, min_in)
        s = sym[..., c : c + 1]
        log_p = torch.where(s == 0, log_cdf_plus, torch.where(s == 2**bits - 1, log_sf_min, log_delta))
        log_mix = torch.logsumexp(log_p + F.log_softmax(mix.logits[..., c, :], dim=-1), dim=-1)
        out.append(-log_mix / math.log(2.0))
    return torch.stack(out, dim=-1)


def zero_flagged_bits(raw: torch.Tensor, sym: torch.Tensor, bits: int, mixtures: int) -> torch.Tensor:
    """What the mixture part of a zero-flagged gray plane costs (:mod:`hpac.entropy.zeroflags`): 0 bits
    where the symbol is 0 (the flag codes it), else -log2 P(x | x != 0).

    Args:
        raw: (..., n_params) head output of a 1-channel model; sym: (..., 1) integer symbols.
    Returns:
        (..., 1) float32 bits.
    """
    log_p0 = -nll_bits(raw, torch.zeros_like(sym), bits, 1, mixtures) * math.log(2.0)  # ln P(x = 0)
    log_nonzero = torch.log(-torch.expm1(log_p0.clamp(max=-1e-7)))
    flagged = nll_bits(raw, sym, bits, 1, mixtures) + log_nonzero / math.log(2.0)
    return torch.where(sym == 0, torch.zeros_like(flagged), flagged)


def _log_sigmoid_diff(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(b) - sigmoid(a)) for b > a, stable in both tails."""
    # sigmoid(b) - sigmoid(a) = sigmoid(b) * sigmoid(-a) * (1 - e^(a-b))
    return F.logsigmoid(b) + F.logsigmoid(-a) + torch.log(-torch.expm1(a - b).clamp(max=-1e-30))
