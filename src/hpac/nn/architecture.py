"""What the HPAC network is, whatever arithmetic evaluates it: its hyper-parameters
(:class:`ModelConfig`), the causal masks of its convolutions, and THE gated block.

Masked convolutions after PixelCNN (van den Oord et al., ICML 2016). The coding order inside
a patch is the skewed diagonal of DLPR (Bai et al., TPAMI 2024), kept by CALLIC and HPAC:
pixel (r, c) belongs to group ``g = c + 2r`` (3P-2 groups). A kernel tap at offset (dr, dc)
points at group ``g + dc + 2dr``, so the stem keeps taps with ``dc + 2dr < 0`` (strictly
earlier groups) and every deeper spatial conv keeps ``dc + 2dr <= 0`` (same-group features
there depend only on earlier groups already). Channels of one pixel are coded in order
through the mixture's linear channel coefficients, so the network never sees the current pixel.

GatedBlock ("content-aware convolutional gating": the MGCF block of CALLIC, Li, Bai et al.,
AAAI 2025, kept by HPAC, Li, Bai et al. 2025)::

    h = LN(x); a, v = W_av h; x = x + W_o( swish(DW_masked(a)) * v )
    x = x + W_down GELU(W_up LN(x))

The float network (:mod:`hpac.nn.model`, torch: training) and the integer network
(:mod:`hpac.nn.integer`, numpy: coding) both run :func:`gated_block`; this module needs
neither torch nor numba, so coding never imports torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

LOG_SCALE_MIN = -16.0  # the head's log-scales, normalised units; e^-16 ~ 1e-7 still resolves one 16-bit step
LOG_SCALE_MAX = 4.0


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

    @classmethod
    def from_dict(cls, fields: dict) -> "ModelConfig":
        """A config from a weights file's metadata, each field an int within CONFIG_LIMITS
        (ValueError otherwise: a file from elsewhere must not size the coder's buffers)."""
        bad = [k for k in fields if k not in CONFIG_LIMITS]
        if bad:
            raise ValueError(f"unknown fields {bad}")
        for k, v in fields.items():
            lo, hi = CONFIG_LIMITS[k]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{k} = {v!r} is outside {lo}..{hi}")
        if fields.get("kernel", cls.kernel) % 2 == 0:
            raise ValueError("the kernel size must be odd")
        return cls(**fields)

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every weight (the float network's state_dict: a weights file
        must hold exactly these; tests check :class:`hpac.nn.model.HPACNet` against it)."""
        d, k, c, r = self.dim, self.kernel, self.channels, self.mlp_ratio * self.dim
        out: dict[str, tuple[int, ...]] = {"stem.weight": (d, c, k, k), "stem.bias": (d,)}
        for i in range(self.blocks):
            p = f"blocks.{i}."
            for name, o, n_in in (("to_av", 2 * d, d), ("proj", d, d), ("mlp_up", r, d), ("mlp_down", d, r)):
                out[p + name + ".weight"], out[p + name + ".bias"] = (o, n_in), (o,)
            out[p + "dw.weight"], out[p + "dw.bias"] = (d, 1, k, k), (d,)
            for name in ("norm1", "norm2"):
                out[p + name + ".weight"] = out[p + name + ".bias"] = (d,)
        out["head_norm.weight"] = out["head_norm.bias"] = (d,)
        out["head.weight"], out["head.bias"] = (self.n_params, d), (self.n_params,)
        ck = c * self.mixtures
        out["skip.weight"], out["skip.bias"] = (ck, c, k, k), (ck,)
        return out


CONFIG_LIMITS = {  # what a weights file may ask for: (least, most) per ModelConfig field
    "channels": (1, 3), "dim": (1, 1024), "blocks": (1, 64), "kernel": (1, 15), "mlp_ratio": (1, 16),
    "mixtures": (1, 64), "patch": (1, 1024),
}


def av_halves(src_dim: int, dim: int) -> np.ndarray:
    """(2 dim,) int64: the rows of a src_dim-wide to_av (a, then v) that a dim-wide cut keeps,
    a's first dim, then v's first dim (its weights, and its per-row grid scales)."""
    return np.r_[0:dim, src_dim : src_dim + dim]


def narrowed(state: dict[str, np.ndarray], src: ModelConfig, dst: ModelConfig) -> dict[str, np.ndarray]:
    """``state`` (the weights of ``src``, named as :meth:`ModelConfig.weight_shapes`) cut to the
    narrower ``dst``: dim and MLP width at most ``src``'s, every other field the same. Each
    layer keeps its first channels (to_av's a and v halves apiece). A start for training a
    narrower network (``hpac train --init``), and a stand-in for its speed
    (scripts/narrow_speed.py)."""
    if replace(dst, dim=src.dim, mlp_ratio=src.mlp_ratio) != src or dst.dim > src.dim \
            or dst.dim * dst.mlp_ratio > src.dim * src.mlp_ratio:
        raise ValueError(f"{dst} is not a narrower form of {src}")
    halves = av_halves(src.dim, dst.dim)
    out = {}
    for name, shape in dst.weight_shapes().items():
        t = np.asarray(state[name])
        if ".to_av." in name:
            t = t[halves]
        out[name] = np.ascontiguousarray(t[tuple(slice(0, n) for n in shape)])
    return out


def causal_mask(k: int, strict: bool) -> np.ndarray:
    """(k, k) bool mask of kernel taps allowed by the skewed-diagonal order g = c + 2r."""
    off = np.arange(k) - k // 2
    order = off[None, :] + 2 * off[:, None]  # dc + 2 dr
    return order < 0 if strict else order <= 0


def gated_block(ar, p, x, depthwise):
    """THE gated block, in arithmetic ``ar`` (:class:`hpac.nn.model.FloatArith` or
    :class:`hpac.nn.integer.IntArith`), on ``p`` (a GatedBlock or its integer form, same
    attribute names); x (..., D): NHWC torch tensors, or the integer arithmetic's numpy rows
    (M, D). ``depthwise(a, p.dw)`` applies the masked depthwise conv (whole plane, or the
    decoder's cached band)::

        a, v = W_av LN(x);  x += W_o( silu(DW(a)) * v );  x += W_down gelu(W_up LN(x))
    """
    a, v = ar.linear_split(ar.norm(x, p.norm1), p.to_av)
    x = ar.residual(x, ar.gate(depthwise(a, p.dw), v, p), p.proj)
    return ar.residual(x, ar.linear_act(ar.norm(x, p.norm2), p.mlp_up, p.gelu), p.mlp_down)
