"""The integer arithmetic of the HPAC network: the same mixture on every machine.

Every tensor this path computes holds integers (in float32 where every partial sum of the
layer is bounded below 2^24, else in float64 below 2^53, or int64), so a matrix product or
convolution is exact whatever order, instruction set, thread count or device sums it in.
Every other step is one IEEE basic operation (+, -, *, /, sqrt: correctly rounded on every
machine), a rounding, or a lookup in a table of integers. The mixture parameters are then a
function of the pixels alone, so the encoder computes a patch many groups a step
(:func:`hpac.nn.csi.plane_params`) and the decoder group by group (:class:`hpac.nn.csi.CSIStepper`);
both get the same integers.

Grids (:class:`QuantSpec`; the widths are a measured choice, docs/integer.md)::

    pixels     q = 2 x - (2^b - 1)                   exact; x_n = q / (2^b - 1)
    weights    w = W s_w, per output channel          |W| <= 2^(bits-1) - 1
    residual   x = X 2^-res_frac                      |X| <= res_limit 2^res_frac
    act. t     t = T s_t, one s_t per tensor          |T| <= 2^(act_bits-1) - 1
    tables     u = U s_u  -> f(u) = F[U] s_f          |U| <= 2^(lut_bits-1) - 1 (SiLU, GELU, tanh)
    outputs    logits, log-scales on 2^-head_frac (normalised units); means on 2^-mean_frac
               symbols; channel coefficients on 2^-coef_frac

A layer ``y = w t + b`` is ``Y = clamp(round(acc * m + c))`` with ``acc = sum W T`` (exact),
``m = s_w s_t / s_y``, ``c = b / s_y``: one rounded multiply and one rounded add. LayerNorm
sums in int64 and normalises with float64 sqrt and division (correctly rounded).

:func:`hpac.nn.architecture.gated_block` is the one definition of the block: :class:`IntArith` is
its integer arithmetic, as :class:`hpac.nn.model.FloatArith` is its float one.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import numpy as np
from numba import njit

from ..entropy import afc
from ..errors import ModelMismatchError
from .architecture import LOG_SCALE_MAX, LOG_SCALE_MIN, causal_mask, ModelConfig
from .schedule import skew_kernel

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
EXACT_F32 = float(1 << 24)  # float32 holds every integer up to this: sums below it are exact
LN_EPS = 1e-5  # torch.nn.LayerNorm's default, as the float network was trained


@dataclass(frozen=True)
class QuantSpec:
    """Bit widths of the integer network (module docstring)."""

    wbits: int = 8  # 1x1 weights inside the blocks
    wbits_edge: int = 12  # stem, skip and head weights (the linear skip predictor needs the bits)
    wbits_dw: int = 8  # depthwise kernels
    act_bits: int = 12  # inputs of every 1x1 layer and of the depthwise conv (10: +0.2% code length)
    lut_bits: int = 12  # inputs (and SiLU outputs) of the tables
    res_frac: int = 10  # fraction bits of the residual stream
    res_limit: float = 512.0  # its magnitude bound
    head_frac: int = 12  # logits and log-scales
    mean_frac: int = 6  # means, in symbols
    coef_frac: int = 12  # channel coefficients (after tanh)
    quantile: float = 0.99999  # activation scales: this quantile of |t| on calibration data


def qmax(bits: int) -> float:
    return float((1 << (bits - 1)) - 1)


def quant_weight(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric grid: W (float64 integers, w's shape), s_w (O,) float64,
    s_w = max |w_o| / qmax rounded to float32. numpy's elementwise division and rint are
    IEEE operations on every machine, so a decoder that merges adapters into the float
    weights gets the encoder's integers."""
    wn = np.asarray(w, np.float64).reshape(w.shape[0], -1)
    top = np.abs(wn).max(1)
    s = np.where(top > 0, top / qmax(bits), 1.0).astype(np.float32).astype(np.float64)
    lim = qmax(bits)
    q = np.clip(np.rint(wn / s[:, None]), -lim, lim)
    return q.reshape(w.shape), s


# ---- the integer network ----------------------------------------------------------------------

@dataclass
class IntLayer:
    """``Y = clamp(round(acc * m + c))``, acc = T W^T exact in ``w.dtype``; W (O, I), m, c (O,)."""

    w: np.ndarray
    m: np.ndarray
    c: np.ndarray
    lim: np.ndarray  # (O,) clamp bound

    @cached_property
    def out(self) -> np.dtype:
        """float32 holds the outputs where every bound is below 2^24."""
        return F32 if float(self.lim.max()) < EXACT_F32 else F64

    @cached_property
    def wt(self) -> np.ndarray:
        """W^T (I, O), contiguous: T W^T as a plain product is the fastest form here."""
        return np.ascontiguousarray(self.w.T)

    @property
    def req(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(m, c, lim), for the kernels."""
        return self.m, self.c, self.lim

    def acc(self, t: np.ndarray) -> np.ndarray:
        """The exact sums T W^T: rows t (M, I) (any strides) -> (M, O) in ``w.dtype`` (a BLAS
        product: every partial sum is an integer the dtype holds, so any order gives them)."""
        dt = self.w.dtype
        rows = t if t.dtype == dt else t.astype(dt)
        out = np.empty((rows.shape[0], self.w.shape[0]), dt)
        np.matmul(rows, self.wt, out=out)
        return out


@dataclass
class IntNorm:
    """LayerNorm of residual-grid rows onto an activation grid: g, b (D,) float64."""

    g: np.ndarray
    b: np.ndarray
    k: float  # 2^(-2 res_frac) / D^3: V -> variance
    lim: float

    @property
    def gb(self) -> tuple[np.ndarray, np.ndarray]:
        return self.g, self.b


@dataclass
class IntDepthwise:
    band: np.ndarray  # (D, 1, H, k) float32 integers: the masked taps as a skewed band kernel (hpac.nn.schedule.skew_kernel)
    m: np.ndarray  # (D,) float32
    c: np.ndarray
    lim: np.ndarray  # (D,) float32 clamp bound (the table's input range)

    @property
    def req(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.m, self.c, self.lim


@dataclass
class IntTable:
    """F[U + off] for integer U in [-off, off]; ``m``: the gate's requantisation (SiLU only)."""

    f: np.ndarray  # (2 off + 1,) float32 integers
    off: int
    m: np.ndarray | None = None  # (1,) float32
    lim: float = 0.0

    @property
    def fm(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(F, m), for the kernels."""
        return self.f, self.m


@dataclass
class IntBlock:
    norm1: IntNorm
    to_av: IntLayer
    dw: IntDepthwise
    gate: IntTable
    proj: IntLayer
    norm2: IntNorm
    mlp_up: IntLayer
    gelu: IntTable
    mlp_down: IntLayer


# Elementwise steps as numba kernels: one pass each instead of a chain of array calls, the
# same IEEE operations in the same order (no fast-math: LLVM does not fuse a * m + c).

@njit(cache=True, fastmath={"reassoc"})
def _row_sums(x, r):
    """(sum X, sum X^2) of row r in float64: integers below 2^53 (``load`` checks the bound),
    so exact in any order; reassociation lets the reduction vectorise. Kept out of line so
    that no other operation gets the flag."""
    s = 0.0
    sq = 0.0
    for i in range(x.shape[1]):
        v = np.float64(x[r, i])
        s += v
        sq += v * v
    return s, sq


@njit(cache=True)
def _norm_rows(x, g, b, k, lim, out):
    m, d = x.shape
    fd = np.float64(d)
    for r in range(m):
        s, sq = _row_sums(x, r)
        # V = sum (D X - S)^2 = D (D sum X^2 - S^2): the bracket is exact, and one rounded
        # product by D is float64(V) as the int64 definition rounds it
        inv = 1.0 / np.sqrt((fd * (fd * sq - s * s)) * k + LN_EPS)
        for i in range(d):
            y = (np.float64(x[r, i]) * fd - s) * inv
            y = y * g[i]
            y = y + b[i]
            out[r, i] = min(max(np.rint(y), -lim), lim)


@njit(cache=True, inline="always")
def _requant_one(a, m, c, lim):
    """One layer output: clamp(round(a m + c), +-lim), two rounded IEEE operations."""
    y = a * m
    y = y + c
    return min(max(np.rint(y), -lim), lim)


@njit(cache=True)
def _requant_split(acc, m, c, lim, a, v):
    """a, v (M, D) := the requantisation of acc's (M, 2D) first and second halves."""
    d = a.shape[1]
    for r in range(acc.shape[0]):
        for o in range(d):
            a[r, o] = _requant_one(acc[r, o], m[o], c[o], lim[o])
        for o in range(d):
            v[r, o] = _requant_one(acc[r, d + o], m[d + o], c[d + o], lim[d + o])


@njit(cache=True, inline="always")
def _lookup_row(acc, m, c, lim, table, off, idx, out):
    """out[o] = F[U_o]: the requantisation U of row acc into int32 indices first, then the
    lookups (two passes: the first vectorises, the gathers alone do not stop it)."""
    for o in range(acc.shape[0]):
        idx[o] = np.int32(_requant_one(acc[o], m[o], c[o], lim[o])) + off
    for o in range(acc.shape[0]):
        out[o] = table[np.uint32(idx[o])]


@njit(cache=True)
def _gate_rows(acc, m, c, lim, v, table, off, mg, glim, out):
    """The depthwise conv's requantisation U, then the gate round(F[U] V m_g), clamped."""
    rows, cols = acc.shape
    idx = np.empty(cols, np.int32)
    f = np.empty(cols, table.dtype)
    g = mg[0]
    for r in range(rows):
        _lookup_row(acc[r], m, c, lim, table, off, idx, f)
        for o in range(cols):
            y = (f[o] * v[r, o]) * g
            out[r, o] = min(max(np.rint(y), -glim), glim)


@njit(cache=True)
def _requant_lookup(acc, m, c, lim, table, off, out):
    """A layer's requantisation U, then the table F[U]."""
    idx = np.empty(acc.shape[1], np.int32)
    for r in range(acc.shape[0]):
        _lookup_row(acc[r], m, c, lim, table, off, idx, out[r])


@njit(cache=True)
def _residual(acc, m, c, lim, x, res_lim, out):
    """out = clamp(x + Y, +-res_lim), Y the layer's requantisation of acc: the residual
    stream's update (both terms and the sum are integers below 2^20: exact)."""
    rows, cols = acc.shape
    for r in range(rows):
        for o in range(cols):
            y = x[r, o] + _requant_one(acc[r, o], m[o], c[o], lim[o])
            out[r, o] = min(max(y, -res_lim), res_lim)



class IntArith:
    """The integer arithmetic of :func:`hpac.nn.architecture.gated_block` (module docstring) on
    numpy rows (M, D): the decoder steps a few hundred rows at a time, and numpy views and
    numba calls cost a fraction of a tensor library's per-call overhead. ``res_lim`` bounds the
    residual stream (integer units)."""

    def __init__(self, res_lim: float):
        self.res_lim = res_lim

    @staticmethod
    def norm(x: np.ndarray, p: IntNorm) -> np.ndarray:
        """Residual rows (M, D) float32 -> activation-grid rows (M, D) float32."""
        out = np.empty(x.shape, np.float32)
        _norm_rows(x, *p.gb, p.k, p.lim, out)
        return out

    @staticmethod
    def linear_split(t: np.ndarray, p: IntLayer) -> tuple[np.ndarray, np.ndarray]:
        """The layer's output (M, 2D) as its halves a, v (M, D), each contiguous, requantised in
        one pass (the gate's loop vectorises only over contiguous rows; never in place: LLVM
        vectorises only loops whose arrays do not alias)."""
        acc = p.acc(t)
        d = acc.shape[1] // 2
        a = np.empty((acc.shape[0], d), p.out)
        v = np.empty((acc.shape[0], d), p.out)
        _requant_split(acc, *p.req, a, v)
        return a, v

    @staticmethod
    def gate(acc: np.ndarray, v: np.ndarray, p: IntBlock) -> np.ndarray:
        """acc: the depthwise conv's exact output (M, D) float32 integers."""
        t = p.gate
        out = np.empty(acc.shape, np.float32)
        _gate_rows(acc, *p.dw.req, v, t.fm[0], t.off, t.fm[1], t.lim, out)
        return out

    @staticmethod
    def linear_act(t: np.ndarray, p: IntLayer, table: IntTable) -> np.ndarray:
        acc = p.acc(t)
        out = np.empty(acc.shape, np.float32)
        _requant_lookup(acc, *p.req, table.fm[0], table.off, out)
        return out

    def residual(self, x: np.ndarray, t: np.ndarray, p: IntLayer) -> np.ndarray:
        """clamp(x + linear(t, p)) in one pass: x (M, D) float32."""
        out = np.empty(x.shape, np.float32)
        _residual(p.acc(t), *p.req, x, self.res_lim, out)
        return out


@dataclass
class IntNet:
    """A network on integer grids for ``bits``-bit symbols (:func:`quantize`)."""

    cfg: ModelConfig
    spec: QuantSpec
    bits: int
    in_w: np.ndarray  # (D + CK, C, k, k) float64 integers: stem and skip, masked
    in_m: np.ndarray  # (D + CK,) float64
    in_c: np.ndarray
    in_lim: np.ndarray
    blocks: list[IntBlock]
    head_norm: IntNorm
    head: IntLayer  # float64: logits | means | log-scales | coefficient table inputs
    tanh: IntTable

    @cached_property
    def in_dtype(self) -> np.dtype:
        """float32 where the stem/skip sums are bounded below 2^24 (|q| <= 2^b - 1), else float64:
        exact either way, float32 convolutions are several times faster."""
        bound = float(np.abs(self.in_w).reshape(self.in_w.shape[0], -1).sum(1).max()) * ((1 << self.bits) - 1)
        return F32 if bound < EXACT_F32 else F64

    @cached_property
    def params_dtype(self) -> np.dtype:
        """float32 where every mixture parameter is bounded below 2^24, else float64: the
        encoder holds a whole shard's parameters, and half the memory is half the page faults.
        Bounds from the weights: a head output by sum |W| A |m| + |c| (and its clamp), a
        mean plus the skip's sum |W| (2^b - 1) |m| + |c|; coefficients by the tanh table's."""
        cfg, h = self.cfg, self.head
        ck, d = cfg.channels * cfg.mixtures, cfg.dim
        head = np.minimum(np.abs(h.w).sum(1).astype(F64) * qmax(self.spec.act_bits) * np.abs(h.m) + np.abs(h.c), h.lim)
        skip = (np.abs(self.in_w[d:]).reshape(ck, -1).sum(1) * ((1 << self.bits) - 1) * np.abs(self.in_m[d:])
                + np.abs(self.in_c[d:]))
        bound = max(float(head[: 3 * ck].max()), float((head[ck : 2 * ck] + skip).max()),
                    float(np.abs(self.tanh.f).max()))
        return F32 if bound < EXACT_F32 else F64

    @cached_property
    def arith(self) -> IntArith:
        return IntArith(self.spec.res_limit * 2.0 ** self.spec.res_frac)

    def stem_out(self, acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M, >= D + CK) exact stem/skip accumulators (``in_dtype``; columns beyond D + CK are
        ignored) -> residual rows X (M, D) float32, skip means (M, CK) float64; the
        requantisation is float64 either way."""
        d, n = self.cfg.dim, self.in_m.shape[0]
        x = np.empty((acc.shape[0], d), np.float32)
        skip = np.empty((acc.shape[0], n - d), np.float64)
        _stem_rows(acc, self.in_m, self.in_c, self.in_lim, x, skip)
        return x, skip

    def tail(self, x: np.ndarray, skip: np.ndarray, out: np.ndarray | None = None,
             rows: np.ndarray | None = None) -> np.ndarray:
        """Residual rows (M, D) and skip means (M, CK) -> integer mixture parameters (module
        docstring's grids): logits | means | log-scales | channel coefficients (the tanh table
        of the head's last outputs), written to rows ``rows`` (M,) int64 of ``out`` (N,
        n_params) float32 or float64 (exact either way: :attr:`params_dtype`); default a new
        (M, n_params) float64 array, and rows 0 .. M - 1. Returns ``out``."""
        ar = self.arith
        acc = self.head.acc(ar.norm(x, self.head_norm))
        if out is None:
            out = np.empty(acc.shape, np.float64)
        if rows is None:
            rows = np.arange(acc.shape[0])
        _head_rows(acc, *self.head.req, skip, self.tanh.fm[0], self.tanh.off, rows, out)
        return out


@njit(cache=True)
def _stem_rows(acc, m, c, lim, x, skip):
    """The stem/skip requantisation (float64) of acc (M, >= D + CK): columns < D into x (M, D),
    the next CK into skip (M, CK)."""
    d, ck = x.shape[1], skip.shape[1]
    for r in range(acc.shape[0]):
        for o in range(d):
            x[r, o] = _requant_one(np.float64(acc[r, o]), m[o], c[o], lim[o])
        for o in range(ck):
            skip[r, o] = _requant_one(np.float64(acc[r, d + o]), m[d + o], c[d + o], lim[d + o])


@njit(cache=True)
def _head_rows(acc, m, c, lim, skip, tanh, off, rows, out):
    """out[rows[r]] := the head's requantisation of acc[r] (n_params,) float64, means (columns
    CK .. 2CK - 1) plus skip[r] (CK,), coefficient inputs (from 3CK) through the tanh table."""
    ck, n = skip.shape[1], acc.shape[1]
    y = np.empty(n, np.float64)
    for r in range(acc.shape[0]):
        for j in range(n):  # one loop over the whole row: it vectorises
            y[j] = _requant_one(acc[r, j], m[j], c[j], lim[j])
        for j in range(ck):
            y[ck + j] += skip[r, j]
        for j in range(3 * ck, n):
            y[j] = tanh[np.int64(y[j]) + off]
        o = out[rows[r]]
        for j in range(n):
            o[j] = y[j]


# ---- export: the float network -> the stored integer network -----------------------------------

_PI = Decimal("3.14159265358979323846264338327950288419716939937510")


def _erf(z: Decimal) -> Decimal:
    """erf by its Taylor series in 50-digit decimal arithmetic; +-1 beyond |z| = 6 (by definition)."""
    if abs(z) >= 6:
        return Decimal(1 if z > 0 else -1)
    z2, term, total, n = z * z, z, z, 0
    while True:
        n += 1
        term = -term * z2 / n
        t = term / (2 * n + 1)
        total += t
        if abs(t) < Decimal(10) ** -40:
            return total * 2 / _PI.sqrt()


TABLE_FUNCTIONS = {  # exactly specified: 50-digit decimal arithmetic (exp is correctly rounded)
    "silu": lambda u: u / (1 + (-u).exp()),
    "gelu": lambda u: u * (1 + _erf(u / Decimal(2).sqrt())) / 2,
    "tanh": lambda u: 1 - 2 / ((2 * u).exp() + 1),
}


def table(kind: str, s_in: float, s_out: float, bits: int, out_lim: float) -> np.ndarray:
    """F[U + off] = clamp(round_half_even(f(U s_in) / s_out)) for U in [-off, off],
    off = 2^(bits-1) - 1: (2 off + 1,) int32, the same on every machine."""
    fn = TABLE_FUNCTIONS[kind]
    off = int(qmax(bits))
    lim = int(out_lim)
    with localcontext() as ctx:
        ctx.prec = 50
        din, dout = Decimal(s_in), Decimal(s_out)  # the float32 scales, exactly
        vals = [int((fn(din * i) / dout).to_integral_value(ROUND_HALF_EVEN)) for i in range(-off, off + 1)]
    return np.array([min(max(v, -lim), lim) for v in vals], np.int32)


def _f32(x: float) -> float:
    """x rounded to float32 (a stored scale)."""
    return float(np.float32(x))


def grids(ranges: dict[str, float], cfg: ModelConfig, spec: QuantSpec = QuantSpec()) -> dict[str, np.ndarray]:
    """The grids of the integer network: every activation scale (float32) and the tables.

    Args:
        ranges: |t| ranges per activation (:func:`calibrate`); a grid step is range / qmax.
    """
    d = cfg.dim
    A, L = qmax(spec.act_bits), qmax(spec.lut_bits)
    st: dict[str, np.ndarray] = {}

    def scale(name, value):
        st[name] = np.array([_f32(value)], F32)
        return float(st[name][0])

    for i in range(cfg.blocks):
        p = f"blocks.{i}."
        scale(p + "norm1.s", ranges[p + "norm1"] / A)
        st[p + "to_av.s"] = np.array([ranges[p + "to_av.a"] / A] * d + [ranges[p + "to_av.v"] / A] * d, F32)
        s_u = scale(p + "dw.s", ranges[p + "dw"] / L)
        with localcontext() as ctx:  # the table's largest |silu|: at its top, or silu's minimum
            ctx.prec = 50
            top = float(max(-TABLE_FUNCTIONS["silu"](Decimal(-1.278464542761074)),
                            TABLE_FUNCTIONS["silu"](Decimal(L) * Decimal(s_u))))
        s_silu = scale(p + "silu.s", top / L)
        st[p + "silu"] = table("silu", s_u, s_silu, spec.lut_bits, L)
        scale(p + "gate.s", ranges[p + "gate"] / A)
        scale(p + "norm2.s", ranges[p + "norm2"] / A)
        s_up = scale(p + "mlp_up.s", ranges[p + "mlp_up"] / L)
        s_h = scale(p + "gelu.s", ranges[p + "gelu"] / A)
        st[p + "gelu"] = table("gelu", s_up, s_h, spec.lut_bits, A)
    scale("head_norm.s", ranges["head_norm"] / A)
    s_c = scale("coef.s", ranges["coef"] / L)
    st["tanh"] = table("tanh", s_c, 2.0 ** -spec.coef_frac, spec.lut_bits, 2.0 ** spec.coef_frac)
    return st


SPEC_LIMITS = {  # QuantSpec fields a weights file may set: (least, most). Beyond them the sums
    # of the integer network could leave float64's exact integers, or its tables hold millions
    "wbits": (2, 16), "wbits_edge": (2, 16), "wbits_dw": (2, 16), "act_bits": (2, 16), "lut_bits": (2, 16),
    "res_frac": (0, 20), "res_limit": (1.0, 2.0 ** 20), "head_frac": (0, 20), "mean_frac": (0, 13),
    "coef_frac": (0, 20), "quantile": (0.5, 1.0),
}


def quant_spec(fields: dict) -> QuantSpec:
    """A weights file's QuantSpec (its metadata's dict), checked against SPEC_LIMITS."""
    bad = [k for k in fields if k not in SPEC_LIMITS]
    if bad:
        raise ModelMismatchError(f"unknown integer-network settings {bad} in the weights file")
    for k, v in fields.items():
        lo, hi = SPEC_LIMITS[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi \
                or isinstance(lo, int) and not isinstance(v, int):
            raise ModelMismatchError(f"integer-network setting {k} = {v!r} is outside {lo}..{hi}")
    return QuantSpec(**fields)


def check_grid(grid: dict[str, np.ndarray], cfg: ModelConfig, spec: QuantSpec) -> None:
    """Refuse grids that :func:`grids` could not have made: every entry present with its shape,
    scales finite and positive, table entries within their layers' ranges (the bounds that
    keep every sum of the integer network exact, and every lookup inside its table)."""
    d, L, A = cfg.dim, qmax(spec.lut_bits), qmax(spec.act_bits)
    n = 2 * int(L) + 1
    want: dict[str, tuple[tuple[int, ...], float | None]] = {}  # name -> (shape, table bound or None: a scale)
    for i in range(cfg.blocks):
        p = f"blocks.{i}."
        for k in ("norm1.s", "dw.s", "silu.s", "gate.s", "norm2.s", "mlp_up.s", "gelu.s"):
            want[p + k] = ((1,), None)
        want[p + "to_av.s"] = ((2 * d,), None)
        want[p + "silu"], want[p + "gelu"] = ((n,), L), ((n,), A)
    want["head_norm.s"], want["coef.s"] = ((1,), None), ((1,), None)
    want["tanh"] = ((n,), 2.0 ** spec.coef_frac)
    missing = sorted(set(want) - set(grid))
    if missing:
        raise ModelMismatchError(f"the weights file's integer grids lack {', '.join(missing[:3])}")
    for k, (shape, bound) in want.items():
        v = np.asarray(grid[k])
        if v.shape != shape:
            raise ModelMismatchError(f"integer grid {k} has shape {v.shape}, not {shape}")
        with np.errstate(invalid="ignore"):
            ok = (np.isfinite(v) & (v > 0)).all() if bound is None else (np.abs(v.astype(np.float64)) <= bound).all()
        if not ok:
            raise ModelMismatchError(f"integer grid {k} holds values no calibration makes")


def export(state: dict[str, np.ndarray], grid: dict[str, np.ndarray],
           spec: QuantSpec = QuantSpec()) -> dict[str, np.ndarray]:
    """The integer network as stored: ``grid`` (:func:`grids`) plus the integer weights of the
    float network ``state`` (float32 arrays named as :class:`hpac.nn.model.HPACNet`'s
    state_dict) as int32, their per-channel float32 scales, and float32 biases and norm gains.
    Deterministic: a decoder that merged adapters into the float weights exports what the
    encoder did."""
    st = dict(grid)

    def f32(name):
        return np.asarray(state[name], F32)

    def masked(name, strict):  # the float network's masked_weight: w * mask in float32
        w = f32(name)
        return w * causal_mask(w.shape[-1], strict).astype(F32)[None, None]

    def layer(name, w, b, bits):
        q, sw = quant_weight(w, bits)
        st[name + ".w"], st[name + ".sw"], st[name + ".b"] = q.astype(np.int32), sw.astype(F32), b

    def norm(name, src):
        st[name + ".g"], st[name + ".b"] = f32(src + ".weight"), f32(src + ".bias")

    layer("in", np.concatenate([masked("stem.weight", True), masked("skip.weight", True)]),
          np.concatenate([f32("stem.bias"), f32("skip.bias")]), spec.wbits_edge)
    i = 0
    while f"blocks.{i}.norm1.weight" in state:
        p = f"blocks.{i}."
        norm(p + "norm1", p + "norm1")
        for name, bits in (("to_av", spec.wbits), ("dw", spec.wbits_dw), ("proj", spec.wbits),
                           ("mlp_up", spec.wbits), ("mlp_down", spec.wbits)):
            w = masked(p + "dw.weight", False) if name == "dw" else f32(p + name + ".weight")
            layer(p + name, w, f32(p + name + ".bias"), bits)
        norm(p + "norm2", p + "norm2")
        i += 1
    norm("head_norm", "head_norm")
    layer("head", f32("head.weight"), f32("head.bias"), spec.wbits_edge)
    return st


# ---- load: the stored integer network -> what coding runs, for b-bit symbols -------------------
# Every derived constant is computed element by element in Python floats (IEEE double, correctly
# rounded), never by a vector kernel: a library may divide by a scalar as a multiply by its
# reciprocal on one instruction set and not on another.

def _each(fn, *cols) -> np.ndarray:
    return np.array([fn(*v) for v in zip(*(np.asarray(c).tolist() for c in cols))], F64)


def _int_layer(st, name, s_in: float, s_out, lim, in_max: float, wide: bool = False) -> IntLayer:
    """Y = clamp(round(acc m + c)): m = s_w s_in / s_out, c = b / s_out (s_out, lim: (O,) or float)."""
    w, sw, b = st[name + ".w"].astype(F64), st[name + ".sw"], st[name + ".b"]
    o = w.shape[0]
    s_out = s_out if isinstance(s_out, np.ndarray) else np.full(o, float(s_out), F64)
    m = _each(lambda a, t: a * s_in / t, sw, s_out)
    c = _each(lambda a, t: a / t, b, s_out)
    lim = lim if isinstance(lim, np.ndarray) else np.full(o, float(lim), F64)
    exact32 = float((np.abs(w).sum(1) * in_max).max()) < EXACT_F32
    dt = F32 if exact32 and not wide else F64
    return IntLayer(w.astype(dt), m.astype(dt), c.astype(dt), lim.astype(dt))


def _int_norm(st, name, spec: QuantSpec) -> IntNorm:
    g, b = st[name + ".g"], st[name + ".b"]
    d = g.size
    s = float(st[name + ".s"][0])
    unit = 2.0 ** -spec.res_frac
    return IntNorm(_each(lambda a: a * unit / d / s, g), _each(lambda a: a / s, b),
                   2.0 ** (-2 * spec.res_frac) / d**3, qmax(spec.act_bits))


def load(st: dict[str, np.ndarray], cfg: ModelConfig, spec: QuantSpec, bits: int) -> IntNet:
    """The coding form of a stored integer network (:func:`export`) for ``bits``-bit symbols."""
    st = {k: np.asarray(v) for k, v in st.items()}
    d, ck = cfg.dim, cfg.channels * cfg.mixtures
    A, L = qmax(spec.act_bits), qmax(spec.lut_bits)
    half = ((1 << bits) - 1) / 2.0
    one, mf = 2.0 ** spec.res_frac, 2.0 ** spec.mean_frac
    res_lim = spec.res_limit * one
    if (d * res_lim) ** 2 >= 2.0**53:  # _row_sums: D sum X^2 and S^2 must stay exact in float64
        raise ModelMismatchError(f"integer grids with a {d}-wide residual of +-{res_lim:g} are not supported")
    sc = lambda name: float(st[name][0])  # noqa: E731
    sw, b = st["in.sw"].tolist(), st["in.b"].tolist()
    # stem: w x_n = s_w W q / (2^b - 1) onto 2^-res_frac; skip, in symbols: w x_n half = s_w W q / 2
    in_m = np.array([a * one / ((1 << bits) - 1) for a in sw[:d]] + [a * mf / 2.0 for a in sw[d:]], F64)
    in_c = np.array([a * one for a in b[:d]] + [a * half * mf for a in b[d:]], F64)
    in_lim = np.array([res_lim] * d + [float(1 << 40)] * ck, F64)
    blocks = []
    for i in range(cfg.blocks):
        p = f"blocks.{i}."
        s_v = float(st[p + "to_av.s"][d])
        dww = st[p + "dw.w"].astype(F32)
        assert float(np.abs(dww).reshape(d, -1).sum(1).max()) * A < EXACT_F32
        s_u, s_a = sc(p + "dw.s"), float(st[p + "to_av.s"][0])
        dw = IntDepthwise(skew_kernel(dww, strict=False), _each(lambda a: a * s_a / s_u, st[p + "dw.sw"]).astype(F32),
                          _each(lambda a: a / s_u, st[p + "dw.b"]).astype(F32), np.full(cfg.dim, L, F32))
        silu = IntTable(st[p + "silu"].astype(F32), int(L), np.array([sc(p + "silu.s") * s_v / sc(p + "gate.s")], F32), A)
        blocks.append(IntBlock(
            _int_norm(st, p + "norm1", spec),
            _int_layer(st, p + "to_av", sc(p + "norm1.s"), st[p + "to_av.s"].astype(F64), A, A),
            dw, silu,
            _int_layer(st, p + "proj", sc(p + "gate.s"), 1.0 / one, res_lim, A),
            _int_norm(st, p + "norm2", spec),
            _int_layer(st, p + "mlp_up", sc(p + "norm2.s"), sc(p + "mlp_up.s"), L, A),
            IntTable(st[p + "gelu"].astype(F32), int(L)),
            _int_layer(st, p + "mlp_down", sc(p + "gelu.s"), 1.0 / one, res_lim, A)))
    hf = 2.0 ** spec.head_frac
    n_rest = cfg.n_params - 3 * ck
    s_out = np.array([1 / hf] * ck + [1 / (half * mf)] * ck + [1 / hf] * ck + [sc("coef.s")] * n_rest, F64)
    lim = np.array([64 * hf] * ck + [float(1 << 40)] * ck + [64 * hf] * ck + [L] * n_rest, F64)
    head = _int_layer(st, "head", sc("head_norm.s"), s_out, lim, A, wide=True)
    c = head.c.tolist()
    c[ck : 2 * ck] = [v + half * mf for v in c[ck : 2 * ck]]  # means in symbols: (mean_n + 1) half
    head.c = np.array(c, F64)
    tanh = IntTable(st["tanh"].astype(F32), int(L))
    w_in = st["in.w"].astype(F64)
    return IntNet(cfg, spec, bits, w_in, in_m, in_c, in_lim, blocks, _int_norm(st, "head_norm", spec), head, tanh)


def centred(sym: np.ndarray, bits: int) -> np.ndarray:
    """Symbols -> q = 2 x - (2^b - 1), float64 (the network's exact input)."""
    return sym.astype(F64) * 2.0 - float((1 << bits) - 1)


def patch_extents(cfg: ModelConfig, valid: np.ndarray) -> np.ndarray:
    """(N, 2) int64: per patch of valid (N, P, P), the (rows, cols) of its top-left corner that
    its real pixels' parameters depend on; (0, 0) for a patch without real pixels.

    A masked tap reaches at most ``down`` rows below and ``right`` columns right of its
    position (k = 7: one row down, three columns right); through the stem and every block's
    depthwise conv that adds up, and nothing beyond it reaches a real pixel. Beyond the real
    pixels of an image-edge patch the coder can stop there (:class:`hpac.nn.csi.CSIStepper`, on
    both sides): what it leaves out is padding whose parameters no one codes."""
    k, p = cfg.kernel, cfg.patch
    off = np.arange(k) - k // 2
    taps = np.argwhere(causal_mask(k, strict=False))
    down, right = int(off[taps[:, 0]].max()), int(off[taps[:, 1]].max())
    layers = cfg.blocks + 1
    idx = np.arange(1, p + 1)
    v = np.asarray(valid)
    last_row = (v.any(axis=2) * idx).max(axis=1, initial=0)  # last real row + 1 (0: none)
    last_col = (v.any(axis=1) * idx).max(axis=1, initial=0)
    out = np.stack([np.minimum(p, last_row + layers * down), np.minimum(p, last_col + layers * right)], axis=1)
    out[last_row == 0] = 0
    return out.astype(np.int64)


@njit(cache=True)
def _units(p, q, rows, chans, k, channels, pairs, mshift, ls_lo, ls_hi, bits, expw, exps):
    m = rows.shape[0]
    ck = channels * k
    w = np.empty((m, k), np.int64)
    mu = np.empty((m, k), np.int64)
    s = np.empty((m, k), np.int64)
    logits = np.empty(k, np.int64)
    ls = np.empty(k, np.int64)
    for i in range(m):
        r, c = rows[i], chans[i]
        base = c * (c - 1) // 2
        for j in range(k):
            logits[j] = np.int64(p[r, c * k + j])
            v = np.int64(p[r, ck + c * k + j]) << mshift
            for cp in range(c):
                v += np.int64(p[r, 3 * ck + j * pairs + base + cp]) * np.int64(q[r, cp])
            mu[i, j] = v
            ls[j] = min(max(np.int64(p[r, 2 * ck + c * k + j]), ls_lo), ls_hi)
        afc.mixture_row(logits, ls, bits, expw, exps, w[i], s[i])
    return w, mu, s


def units(net: IntNet, p: np.ndarray, c, q: np.ndarray, rows: np.ndarray | None = None):
    """Channel ``c``'s mixture as the integers the entropy coder takes (:mod:`hpac.entropy.afc`).

    Args:
        p: (N, n_params) integer parameters (:class:`hpac.nn.csi.CSIStepper`),
            numpy (float32 or float64).
        c: the channel (int), or (M,) int64 one per output row (the encoder's coding order).
        q: (N, C) float64 numpy: coded channels of the same pixels as q = 2 x - (2^b - 1)
            (channels < c read).
        rows: (M,) int64: the row of p and q each output row reads (default: all N in order).
    Returns:
        w (2^-16), mu (2^-13 symbols), S (2^-13 symbols): (M, K) int64 numpy arrays. A mean is
        M 2^7 + sum coef q: coef x_n half = C 2^-coef_frac q / 2, exact on 2^-13 for coef_frac 12;
        log-scales clamped to [LOG_SCALE_MIN, LOG_SCALE_MAX] (afc.mixture_row turns them into S).
    """
    cfg, spec = net.cfg, net.spec
    one = 1 << spec.head_frac
    expw, exps, _, _ = afc.constants()
    rows = np.arange(p.shape[0]) if rows is None else np.asarray(rows, np.int64)
    chans = np.full(rows.shape[0], c, np.int64) if np.ndim(c) == 0 else np.asarray(c, np.int64)
    return _units(np.ascontiguousarray(p), np.ascontiguousarray(q), rows, chans, cfg.mixtures, cfg.channels,
                  cfg.n_coefs, afc.MU_FRAC - spec.mean_frac, int(LOG_SCALE_MIN) * one, int(LOG_SCALE_MAX) * one,
                  net.bits, expw, exps)
