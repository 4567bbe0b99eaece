"""An independent, slow reference of hpac's integer network and integer AFC tables.

Written only from docs/format.md ("The integer network", "The mixture and AFC tables") and the
safetensors layout of a model file; it imports neither torch nor hpac. Everything here is
numpy int64 (exact sums), IEEE float64/float32 elementwise operations (each correctly rounded,
one operation at a time, as the spec writes them), Python ints and 50-digit decimals.

Entry points:
  load(path, bits, tables="computed")  -> RefNet (integer weights, m, c, types, tables)
  plane_params(net, sym)               -> (B, P, P, n_params) int64: [Lg | Mn | Ls | C]
  constants()                          -> EXPW, EXPS, SIG, LNW (int64)
  grid_tables(path)                    -> {"blocks.i.silu": ..., "blocks.i.gelu": ..., "tanh": ...}
  mixture(lg, ls, bits), units(p, c, q, C, K, bits), cdf(t, w, mu, S), total(w),
  windows(w, mu, S, bits, low), table_row(...), bin_tables(...), mass_below(...)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal, localcontext, ROUND_HALF_EVEN
from functools import lru_cache

import numpy as np
from safetensors.numpy import load_file
from safetensors import safe_open

PREC = 50


# ---------------------------------------------------------------------------------------------
# scalar helpers

def f32(x):
    """Round a double (or array of doubles) to single precision, round to nearest even."""
    return np.asarray(x, dtype=np.float64).astype(np.float32)


def rint(x):
    """Round half to even (np.rint), as int64."""
    return np.rint(np.asarray(x)).astype(np.int64)


def dec_round(x: Decimal) -> int:
    return int(x.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@lru_cache(maxsize=None)
def _pi() -> Decimal:
    # the decimal module's documented recipe, at PREC + 2 digits
    with localcontext() as ctx:
        ctx.prec += 2
        three = Decimal(3)
        lasts, t, s, n, na, d, da = 0, three, 3, 1, 0, 0, 24
        while s != lasts:
            lasts = s
            n, na = n + na, na + 8
            d, da = d + da, da + 32
            t = (t * n) / d
            s += t
    return +s


def _erf(z: Decimal) -> Decimal:
    """erf by its Taylor series, +-1 for |z| >= 6 (current decimal context)."""
    if z >= 6:
        return Decimal(1)
    if z <= -6:
        return Decimal(-1)
    total = Decimal(0)
    term = z  # (-1)^n z^(2n+1) / n!
    n = 0
    z2 = z * z
    while True:
        piece = term / (2 * n + 1)
        if piece == 0 or (n > 5 and abs(piece) < Decimal(10) ** (-PREC - 5)):
            break
        total += piece
        n += 1
        term = -term * z2 / n
    return 2 / _sqrt_pi() * total


@lru_cache(maxsize=None)
def _sqrt_pi() -> Decimal:
    with localcontext() as ctx:
        ctx.prec = PREC
        return _pi().sqrt()


def _silu(u: Decimal) -> Decimal:
    return u / (1 + (-u).exp())


def _gelu(u: Decimal) -> Decimal:
    return u * (1 + _erf(u / Decimal(2).sqrt())) / 2


def _tanh(u: Decimal) -> Decimal:
    return 1 - 2 / ((2 * u).exp() + 1)


def lut(f, s_in: float, s_out: float, L: int, lim: int) -> np.ndarray:
    """F[U + L] = clip(rint(f(U s_in) / s_out), +-lim), U in -L..L, 50-digit decimals."""
    out = np.zeros(2 * L + 1, dtype=np.int64)
    with localcontext() as ctx:
        ctx.prec = PREC
        si, so = Decimal(float(s_in)), Decimal(float(s_out))
        for U in range(-L, L + 1):
            v = dec_round(f(U * si) / so)
            out[U + L] = max(-lim, min(lim, v))
    return out


@lru_cache(maxsize=None)
def constants() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """EXPW, EXPS, SIG, LNW exactly as the spec defines them (50-digit decimals)."""
    with localcontext() as ctx:
        ctx.prec = PREC
        d256 = Decimal(256)
        expw = [dec_round(Decimal(2 ** 16) * (-Decimal(i) / d256).exp()) for i in range(4097)]
        exps = [dec_round(Decimal(2 ** 40) * (Decimal(-16) + Decimal(j) / d256).exp()) for j in range(5121)]
        sig = [dec_round(Decimal(2 ** 30) / (1 + (-(Decimal(i - 4096) / d256)).exp())) for i in range(8193)]
        base = Decimal(3e-4) * Decimal(2 ** 16)  # 3e-4: the double nearest to it, exactly
        lnw = [dec_round(d256 * (Decimal(16 * max(i, 1)) / base).ln()) for i in range(4097)]
    return tuple(np.array(t, dtype=np.int64) for t in (expw, exps, sig, lnw))


# ---------------------------------------------------------------------------------------------
# the integer network

@dataclass
class Layer:
    W: np.ndarray        # int64, (out, in) or (out, C, k, k)
    m: np.ndarray        # float64 values (already rounded to the type when f32)
    c: np.ndarray
    bound: np.ndarray    # int64 per row
    type: str            # "f32" or "f64"


@dataclass
class Block:
    g1: np.ndarray
    b1: np.ndarray
    to_av: Layer
    dwW: np.ndarray      # int64 (D, k, k), masked
    m_d: np.ndarray      # float32
    c_d: np.ndarray      # float32
    m_g: np.float32
    proj: Layer
    g2: np.ndarray
    b2: np.ndarray
    mlp_up: Layer
    mlp_down: Layer
    silu: np.ndarray
    gelu: np.ndarray


@dataclass
class RefNet:
    C: int
    D: int
    K: int
    k: int
    P: int
    bits: int
    A: int
    L: int
    R: int
    res_bound: int
    kk: float
    inl: Layer
    blocks: list = field(default_factory=list)
    gh: np.ndarray = None
    bh: np.ndarray = None
    head: Layer = None
    tanh: np.ndarray = None

    @property
    def n_params(self) -> int:
        C, K = self.C, self.K
        return 3 * C * K + K * C * (C - 1) // 2


def quant_weight(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output row: s_o = f32(top / (2^(bits-1) - 1)) (1.0 where top = 0),
    W_o = clip(rint(w_o / s_o), +-(2^(bits-1) - 1))."""
    lim = 2 ** (bits - 1) - 1
    rows = w.reshape(w.shape[0], -1).astype(np.float64)
    W = np.zeros(rows.shape, dtype=np.int64)
    s = np.zeros(rows.shape[0], dtype=np.float64)
    for o in range(rows.shape[0]):
        top = float(np.max(np.abs(rows[o])))
        so = float(np.float32(top / lim)) if top != 0 else 1.0
        s[o] = so
        W[o] = np.clip(np.rint(rows[o] / so), -lim, lim).astype(np.int64)
    return W.reshape(w.shape), s


def _layer_type(W: np.ndarray, in_bound: int) -> str:
    rowsum = np.abs(W.reshape(W.shape[0], -1)).sum(axis=1)
    return "f32" if int(rowsum.max()) * in_bound < 2 ** 24 else "f64"


def _one_by_one(w, bias, wbits, s_in, s_out, bound, A, force=None, c_extra=None) -> Layer:
    """1x1 layer with input step s_in onto steps s_out_o: m_o = s_o * s_in / s_out_o,
    c_o = bias_o / s_out_o (Python floats), then rounded to the layer's type."""
    W, s = quant_weight(w, wbits)
    n = W.shape[0]
    m = np.zeros(n)
    c = np.zeros(n)
    for o in range(n):
        m[o] = float(s[o]) * float(s_in) / float(s_out[o])
        c[o] = float(bias[o]) / float(s_out[o])
        if c_extra is not None and c_extra[o] is not None:
            c[o] = c[o] + c_extra[o]
    typ = force or _layer_type(W, A)
    if typ == "f32":
        m = f32(m).astype(np.float64)
        c = f32(c).astype(np.float64)
    return Layer(W, m, c, np.asarray(bound, dtype=np.int64), typ)


def _masks(k: int) -> tuple[np.ndarray, np.ndarray]:
    h = k // 2
    edge = np.zeros((k, k), dtype=bool)
    dw = np.zeros((k, k), dtype=bool)
    for dr in range(-h, h + 1):
        for dc in range(-h, h + 1):
            edge[dr + h, dc + h] = dc + 2 * dr < 0
            dw[dr + h, dc + h] = dc + 2 * dr <= 0
    return edge, dw


def grid_tables(path: str, which=None) -> dict[str, np.ndarray]:
    """Recompute the SiLU/GELU/TANH tables of a model file from its grid steps."""
    meta = safe_open(path, "np").metadata()
    cfg, spec = json.loads(meta["config"]), json.loads(meta["quant_spec"])
    t = load_file(path)
    A = 2 ** (spec["act_bits"] - 1) - 1
    L = 2 ** (spec["lut_bits"] - 1) - 1
    g = lambda n: float(t["grid." + n][0])
    out = {}
    for i in range(cfg["blocks"]):
        b = f"blocks.{i}."
        if which is None or "silu" in which:
            out[b + "silu"] = lut(_silu, g(b + "dw.s"), g(b + "silu.s"), L, L)
        if which is None or "gelu" in which:
            out[b + "gelu"] = lut(_gelu, g(b + "mlp_up.s"), g(b + "gelu.s"), L, A)
    if which is None or "tanh" in which:
        out["tanh"] = lut(_tanh, g("coef.s"), 2.0 ** -12, L, 2 ** 12)
    return out


def load(path: str, bits: int, patch: int | None = None, tables: str = "computed") -> RefNet:
    """The reference integer network of a model file for b-bit symbols. tables: "computed"
    recomputes SILU/GELU/TANH from the steps; "stored" takes the file's grid tables."""
    meta = safe_open(path, "np").metadata()
    cfg, spec = json.loads(meta["config"]), json.loads(meta["quant_spec"])
    t = load_file(path)
    C, D, K, k = cfg["channels"], cfg["dim"], cfg["mixtures"], cfg["kernel"]
    P = patch or cfg["patch"]
    A = 2 ** (spec["act_bits"] - 1) - 1
    L = 2 ** (spec["lut_bits"] - 1) - 1
    R = spec["res_frac"]
    one = 2.0 ** R
    mf = 2.0 ** spec["mean_frac"]
    hf = 2.0 ** spec["head_frac"]
    half = (2 ** bits - 1) / 2
    res_bound = int(spec["res_limit"] * one)
    g = lambda n: float(t["grid." + n][0])
    edge, dwm = _masks(k)

    # `in`: stem and skip, masked, stacked; f64
    stem = t["stem.weight"].astype(np.float64) * edge
    skip = t["skip.weight"].astype(np.float64) * edge
    Win, s_in = quant_weight(np.concatenate([stem, skip]), spec["wbits_edge"])
    bias = np.concatenate([t["stem.bias"], t["skip.bias"]]).astype(np.float64)
    n_in = D + C * K
    m = np.zeros(n_in)
    c = np.zeros(n_in)
    bound = np.zeros(n_in, dtype=np.int64)
    for o in range(n_in):
        if o < D:
            m[o] = float(s_in[o]) * one / (2 ** bits - 1)
            c[o] = float(bias[o]) * one
            bound[o] = res_bound
        else:
            m[o] = float(s_in[o]) * mf / 2.0
            c[o] = float(bias[o]) * half * mf
            bound[o] = 2 ** 40
    inl = Layer(Win, m, c, bound, "f64")

    def ln(wn, bn, s):
        gg = np.array([float(x) * 2.0 ** -R / D / s for x in t[wn]])
        bb = np.array([float(x) / s for x in t[bn]])
        return gg, bb

    net = RefNet(C, D, K, k, P, bits, A, L, R, res_bound, 2.0 ** (-2 * R) / D ** 3, inl)
    computed = grid_tables(path) if tables == "computed" else None
    for i in range(cfg["blocks"]):
        b = f"blocks.{i}."
        g1, b1 = ln(b + "norm1.weight", b + "norm1.bias", g(b + "norm1.s"))
        g2, b2 = ln(b + "norm2.weight", b + "norm2.bias", g(b + "norm2.s"))
        avs = t["grid." + b + "to_av.s"].astype(np.float64)
        to_av = _one_by_one(t[b + "to_av.weight"], t[b + "to_av.bias"], spec["wbits"], g(b + "norm1.s"),
                            avs, [A] * (2 * D), A)
        Wd, sd = quant_weight(t[b + "dw.weight"].astype(np.float64) * dwm, spec["wbits_dw"])
        a_step, v_step = float(avs[0]), float(avs[D])
        m_d = f32([float(sd[d]) * a_step / g(b + "dw.s") for d in range(D)])
        c_d = f32([float(x) / g(b + "dw.s") for x in t[b + "dw.bias"]])
        m_g = np.float32(g(b + "silu.s") * v_step / g(b + "gate.s"))
        proj = _one_by_one(t[b + "proj.weight"], t[b + "proj.bias"], spec["wbits"], g(b + "gate.s"),
                           [1 / one] * D, [res_bound] * D, A)
        up = _one_by_one(t[b + "mlp_up.weight"], t[b + "mlp_up.bias"], spec["wbits"], g(b + "norm2.s"),
                         [g(b + "mlp_up.s")] * (2 * D), [L] * (2 * D), A)
        down = _one_by_one(t[b + "mlp_down.weight"], t[b + "mlp_down.bias"], spec["wbits"], g(b + "gelu.s"),
                           [1 / one] * D, [res_bound] * D, A)
        if computed is not None:
            silu, gelu = computed[b + "silu"], computed[b + "gelu"]
        else:
            silu, gelu = t["grid." + b + "silu"].astype(np.int64), t["grid." + b + "gelu"].astype(np.int64)
        net.blocks.append(Block(g1, b1, to_av, Wd[:, 0], m_d, c_d, m_g, proj, g2, b2, up, down, silu, gelu))
    net.gh, net.bh = ln("head_norm.weight", "head_norm.bias", g("head_norm.s"))
    CK = C * K
    s_out, hb, extra = [], [], []
    for o in range(net.n_params):
        if o < CK or 2 * CK <= o < 3 * CK:      # logits, log-scales
            s_out.append(1 / hf), hb.append(64 * int(hf)), extra.append(None)
        elif o < 2 * CK:                         # means
            s_out.append(1 / (half * mf)), hb.append(2 ** 40), extra.append(half * mf)
        else:                                    # coefficient inputs
            s_out.append(g("coef.s")), hb.append(L), extra.append(None)
    net.head = _one_by_one(t["head.weight"], t["head.bias"], spec["wbits_edge"], g("head_norm.s"),
                           s_out, hb, A, force="f64", c_extra=extra)
    net.tanh = computed["tanh"] if computed is not None else t["grid.tanh"].astype(np.int64)
    return net


def _shift(x: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """out[r, c] = x[r + dr, c + dc] inside the patch, 0 outside. x: (P, P, ...)."""
    P0, P1 = x.shape[:2]
    out = np.zeros_like(x)
    r0, r1 = max(0, -dr), min(P0, P0 - dr)
    c0, c1 = max(0, -dc), min(P1, P1 - dc)
    if r0 < r1 and c0 < c1:
        out[r0:r1, c0:c1] = x[r0 + dr:r1 + dr, c0 + dc:c1 + dc]
    return out


def _affine(acc: np.ndarray, l: Layer) -> np.ndarray:
    """clip(rint((acc m) + c), bound) in the layer's type, one rounding per operation."""
    if l.type == "f32":
        assert np.abs(acc).max(initial=0) < 2 ** 24
        y = (acc.astype(np.float32) * l.m.astype(np.float32)).astype(np.float32)
        y = (y + l.c.astype(np.float32)).astype(np.float32)
    else:
        assert np.abs(acc).max(initial=0) < 2 ** 53
        y = acc.astype(np.float64) * l.m
        y = y + l.c
    return np.clip(rint(y), -l.bound, l.bound)


def _dense(T: np.ndarray, l: Layer) -> np.ndarray:
    acc = T.astype(np.int64) @ l.W.T.astype(np.int64)  # exact int64 sums
    return _affine(acc, l)


def _layernorm(X: np.ndarray, g: np.ndarray, b: np.ndarray, net: RefNet) -> np.ndarray:
    D = net.D
    X = X.astype(np.int64)
    cen = D * X - X.sum(axis=-1, keepdims=True)
    var = (cen * cen).sum(axis=-1, keepdims=True).astype(np.float64)
    inv = 1.0 / np.sqrt(var * net.kk + 1e-5)
    y = cen.astype(np.float64) * inv
    y = y * g
    y = y + b
    return np.clip(rint(y), -net.A, net.A)


def patch_params(net: RefNet, sym: np.ndarray) -> np.ndarray:
    """Integer parameters of every position of one patch of symbols (P, P, C), every pixel
    coded. Returns (P, P, n_params) int64 laid out [Lg | Mn | Ls | C]."""
    sym = np.asarray(sym, dtype=np.int64)
    Pr, Pc, C = sym.shape
    k, h, D, K = net.k, net.k // 2, net.D, net.K
    q = 2 * sym - (2 ** net.bits - 1)
    # 1. the `in` layer over the masked taps
    acc = np.zeros((Pr, Pc, net.inl.W.shape[0]), dtype=np.int64)
    for dr in range(-h, h + 1):
        for dc in range(-h, h + 1):
            if not dc + 2 * dr < 0:
                continue
            qs = _shift(q, dr, dc)                       # (P, P, C)
            acc += qs @ net.inl.W[:, :, dr + h, dc + h].T
    y = _affine(acc, net.inl)
    X, SK = y[..., :D], y[..., D:]
    # 2. blocks
    for blk in net.blocks:
        av = _dense(_layernorm(X, blk.g1, blk.b1, net), blk.to_av)
        a, v = av[..., :D], av[..., D:]
        accd = np.zeros((Pr, Pc, D), dtype=np.int64)
        for dr in range(-h, h + 1):
            for dc in range(-h, h + 1):
                if not dc + 2 * dr <= 0:
                    continue
                accd += _shift(a, dr, dc) * blk.dwW[:, dr + h, dc + h]
        assert np.abs(accd).max() < 2 ** 24
        u = (accd.astype(np.float32) * blk.m_d).astype(np.float32)
        u = (u + blk.c_d).astype(np.float32)
        u = np.clip(rint(u), -net.L, net.L)
        sv = (blk.silu[u + net.L] * v)
        assert np.abs(sv).max() < 2 ** 24                # the product is exact in f32
        gg = (sv.astype(np.float32) * blk.m_g).astype(np.float32)
        gg = np.clip(rint(gg), -net.A, net.A)
        X = np.clip(X + _dense(gg, blk.proj), -net.res_bound, net.res_bound)
        hh = blk.gelu[_dense(_layernorm(X, blk.g2, blk.b2, net), blk.mlp_up) + net.L]
        X = np.clip(X + _dense(hh, blk.mlp_down), -net.res_bound, net.res_bound)
    # 3. head
    p = _dense(_layernorm(X, net.gh, net.bh, net), net.head)
    CK = C * K
    p[..., CK:2 * CK] += SK
    p[..., 3 * CK:] = net.tanh[p[..., 3 * CK:] + net.L]
    return p


def plane_params(net: RefNet, sym: np.ndarray) -> np.ndarray:
    """(B, P, P, C) symbols -> (B, P, P, n_params) int64."""
    sym = np.asarray(sym)
    return np.stack([patch_params(net, s) for s in sym])


# ---------------------------------------------------------------------------------------------
# the mixture and AFC tables (Python ints, row by row)

def mixture(lg, ls, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """lg, ls: (M, K) integers (logits, log-scales on 2^-12) -> w, S (M, K) int64."""
    EXPW, EXPS, _, _ = constants()
    lg = np.asarray(lg, dtype=np.int64)
    ls = np.asarray(ls, dtype=np.int64)
    M, K = lg.shape
    w = np.zeros((M, K), dtype=np.int64)
    S = np.zeros((M, K), dtype=np.int64)
    for r in range(M):
        top = max(int(x) for x in lg[r])
        e = [int(EXPW[min((top - int(lg[r, j])) >> 4, 4096)]) for j in range(K)]
        tot = sum(e)
        for j in range(K):
            w[r, j] = (e[j] << 16) // tot
            l = max(-16 * 2 ** 12, min(4 * 2 ** 12, int(ls[r, j])))
            S[r, j] = max(2 ** 7, (int(EXPS[(l + 16 * 2 ** 12) >> 4]) * (2 ** bits - 1)) >> 28)
    return w, S


def units(p, c: int, q, C: int, K: int, bits: int):
    """Mixture (w, mu, S) of channel c from integer parameters p (M, n_params) and the
    q = 2x - (2^b - 1) of the row's channels (M, C) (only c' < c are read)."""
    p = np.asarray(p)
    q = np.asarray(q)
    M = p.shape[0]
    CK = C * K
    npair = C * (C - 1) // 2
    lg = p[:, c * K:(c + 1) * K]
    mn = p[:, CK + c * K:CK + (c + 1) * K]
    ls = p[:, 2 * CK + c * K:2 * CK + (c + 1) * K]
    w, S = mixture(lg.astype(np.int64), ls.astype(np.int64), bits)
    mu = np.zeros((M, K), dtype=np.int64)
    for r in range(M):
        for k in range(K):
            v = int(mn[r, k]) * 2 ** 7
            for cp in range(c):
                v += int(p[r, 3 * CK + k * npair + c * (c - 1) // 2 + cp]) * int(q[r, cp])
            mu[r, k] = v
    return w, mu, S


def cdf(t: int, w, mu, S) -> int:
    """CDF of one mixture (w, mu, S: length-K integer sequences) at edge t (2^-13 symbols)."""
    _, _, SIG, _ = constants()
    tot = 0
    for wk, mk, sk in zip(w, mu, S):
        inv = 2 ** 40 // int(sk)
        d = max(-17 * int(sk), min(17 * int(sk), int(t) - int(mk)))
        zf = (d * inv) >> 24                            # floor
        zf = max(-2 ** 20, min(2 ** 20 - 1, zf))
        i = (zf >> 8) + 4096
        sig = int(SIG[i]) + (((int(SIG[i + 1]) - int(SIG[i])) * (zf & 255)) >> 8)
        tot += int(wk) * sig
    return tot


def total(w) -> int:
    return sum(int(x) for x in w) * 2 ** 30


def _next_pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def window(w, mu, S, bits: int, low: int) -> tuple[int, int, int]:
    """(lo, delta, width) of one mixture."""
    _, _, _, LNW = constants()
    one = 2 ** 13
    centre = sum(int(a) * int(b) for a, b in zip(w, mu)) >> 16
    centre = max(low * one, min((2 ** bits - 1) * one, centre))
    reach = 0
    for wk, mk, sk in zip(w, mu, S):
        lw = int(LNW[int(wk) >> 4])
        if lw > 0:
            reach = max(reach, abs(int(mk) - centre) + ((lw * int(sk)) >> 8))
    need = max(1, min(2 ** bits, (2 * reach + 2 * one - 1) >> 13))
    delta = _next_pow2(-(-need // 256))
    width = max(4, min(256, _next_pow2(-(-need // delta))))
    width = min(width, (2 ** bits - low) // delta)
    start = (centre >> 13) // delta - width // 2
    lo = min(max(start * delta, low), 2 ** bits - width * delta)
    return lo, delta, width


def windows(w, mu, S, bits: int, low):
    w, mu, S = (np.asarray(a) for a in (w, mu, S))
    M = w.shape[0]
    lows = np.broadcast_to(np.asarray(low), (M,))
    out = np.array([window(w[r], mu[r], S[r], bits, int(lows[r])) for r in range(M)], dtype=np.int64)
    return out[:, 0], out[:, 1], out[:, 2]


def table_row(s: int, step: int, n: int, bits: int, w, mu, S, escape: bool, low: int,
              cdf_entries: bool = True) -> list[int]:
    """Integer entries of one row over bins [s + j step, s + (j+1) step), j < n (+ escape);
    ``cdf_entries``: version 10's bin entries, else those of versions 8 and 9."""
    T = total(w)
    E = []
    for j in range(n + 1):
        x = s + j * step
        if j == 0 and low == 0 and s <= 0:
            E.append(0)
        elif j == n and x >= 2 ** bits:
            E.append(T)
        else:
            E.append(cdf((2 * x - 1) * 2 ** 12, w, mu, S))
    if cdf_entries:
        row = [(E[j + 1] >> 23) - (E[j] >> 23) + 1 for j in range(n)]
    else:
        row = [max(1, (E[j + 1] - E[j]) >> 23) for j in range(n)]
    if escape:
        B = cdf((2 * low - 1) * 2 ** 12, w, mu, S) if low == 1 else 0
        row.append(max(1, ((E[0] - B) + (T - E[n])) >> 23))
    return row


def bin_tables(start, step, n_bins, bits: int, w, mu, S, escape: bool, low, cdf_entries: bool = True):
    """Per run of equal n_bins (rows sorted ascending): (first, end, float32 table)."""
    start, step, n_bins = (np.asarray(a, dtype=np.int64) for a in (start, step, n_bins))
    M = len(start)
    lows = np.broadcast_to(np.asarray(low), (M,))
    out = []
    r = 0
    while r < M:
        e = r
        while e < M and n_bins[e] == n_bins[r]:
            e += 1
        rows = [table_row(int(start[i]), int(step[i]), int(n_bins[i]), bits, w[i], mu[i], S[i],
                          escape, int(lows[i]), cdf_entries) for i in range(r, e)]
        tab = np.array(rows, dtype=np.int64)
        assert tab.max() < 2 ** 24
        out.append((r, e, tab.astype(np.float32)))
        r = e
    return out


def mass_below(x: int, w, mu, S) -> np.ndarray:
    """f32(f64(CDF at the edge below symbol x) / f64(T)) per row."""
    w, mu, S = (np.asarray(a) for a in (w, mu, S))
    return np.array([np.float32(float(cdf((2 * x - 1) * 2 ** 12, w[r], mu[r], S[r])) / float(total(w[r])))
                     for r in range(w.shape[0])], dtype=np.float32)
