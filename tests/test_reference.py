"""The fast integer path (hpac.nn.integer / hpac.entropy.afc) against tests/reference_int.py, an independent
plain-numpy reference written from docs/format.md: every compared integer must be equal."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import reference_int as R
from hpac.entropy import afc
from hpac.nn import integer
from hpac.nn.csi import plane_params
from hpac.zoo.catalog import load_catalog_model, load_model_file

ROOT = Path(__file__).parent.parent
TINY = {name: ROOT / "tests" / "conformance" / "models" / f"{name}.safetensors" for name in ("tiny1", "tiny3")}
WEIGHTS = ROOT / "src" / "hpac" / "zoo" / "data"
SAMPLE = ROOT / "samples" / "ihc_crop.png"


# ---------------------------------------------------------------------------------------------
# (a) constant tables

def test_constants_equal():
    ref = R.constants()
    fast = afc.constants()
    for name, a, b in zip(("EXPW", "EXPS", "SIG", "LNW"), ref, fast):
        b = np.asarray(b)
        assert a.shape == b.shape, name
        assert np.array_equal(a, b.astype(np.int64)), (name, np.nonzero(a != b)[0][:10])


# ---------------------------------------------------------------------------------------------
# (b) per-model SILU/GELU/TANH tables from the grid steps

def _check_grids(path: Path):
    stored = load_file(str(path))
    computed = R.grid_tables(str(path))
    meta = json.loads(safe_open(str(path), "np").metadata()["config"])
    assert set(computed) == {f"blocks.{i}.{f}" for i in range(meta["blocks"]) for f in ("silu", "gelu")} | {"tanh"}
    for name, table in computed.items():
        s = stored["grid." + name].astype(np.int64)
        assert np.array_equal(table, s), (path.name, name, np.nonzero(table != s)[0][:10])


@pytest.mark.parametrize("name", ["tiny1", "tiny3"])
def test_grid_tables_tiny(name):
    _check_grids(TINY[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hpac-natural", "hpac-gray", "hpac-gray16"])
def test_grid_tables_shipped(name):
    _check_grids(WEIGHTS / f"{name}.safetensors")


# ---------------------------------------------------------------------------------------------
# (c) integer parameters of every position of a patch

def _compare_params(path: Path, model, bits: int, sym: np.ndarray, patch: int, tables: str = "computed",
                    span: int | None = None):
    net = R.load(str(path), bits, patch=patch, tables=tables)
    ref = R.plane_params(net, sym)
    fast = plane_params(model.integer(bits), sym.astype(np.int64), span=span)
    assert fast.shape == ref.shape
    assert np.array_equal(fast, np.rint(fast)), "fast parameters are not integers"
    diff = np.argwhere(fast.astype(np.int64) != ref)
    assert len(diff) == 0, f"{len(diff)} parameters differ, first (b, r, c, param): {diff[:5].tolist()}"
    return net


@pytest.mark.parametrize("bits", [8, 12])
@pytest.mark.parametrize("name", ["tiny1", "tiny3"])
def test_plane_params_tiny(name, bits):
    model = load_model_file(TINY[name], name)
    C = model.integer(bits).cfg.channels
    sym = np.random.default_rng(bits * 10 + C).integers(0, 2 ** bits, (3, 8, 8, C))
    sym[0] = 0                                   # extremes: all 0, all 2^b - 1
    sym[1, :4] = 2 ** bits - 1
    _compare_params(TINY[name], model, bits, sym, 8)
    _compare_params(TINY[name], model, bits, sym, 8, span=3)  # a patch in spans of 3 groups (the last 1)


def _crops(img: np.ndarray, p: int, n: int) -> np.ndarray:
    H, W = img.shape[:2]
    rng = np.random.default_rng(5)
    out = [img[:p, :p]]
    for _ in range(n - 1):
        r, c = rng.integers(0, H - p + 1), rng.integers(0, W - p + 1)
        out.append(img[r:r + p, c:c + p])
    return np.stack(out).astype(np.int64)


def test_plane_params_natural_crop():
    img = np.asarray(Image.open(SAMPLE).convert("RGB"))
    model = load_catalog_model("hpac-natural").with_patch(16)
    sym = _crops(img, 16, 4)
    net = _compare_params(WEIGHTS / "hpac-natural.safetensors", model, 8, sym, 16, span=5)
    assert all(l.type == "f32" for b in net.blocks for l in (b.to_av, b.proj, b.mlp_up, b.mlp_down))


def test_plane_params_f64_layers(tmp_path):
    """The f64 branch of the layer-type rule: tiny3 with wbits 16 makes sum |W| * A >= 2^24."""
    meta = dict(safe_open(str(TINY["tiny3"]), "np").metadata())
    spec = json.loads(meta["quant_spec"])
    spec["wbits"] = 16
    meta["quant_spec"] = json.dumps(spec)
    path = tmp_path / "tiny3w16.safetensors"
    save_file(load_file(str(TINY["tiny3"])), str(path), meta)
    model = load_model_file(path, "tiny3")
    for bits in (8, 12):
        sym = np.random.default_rng(bits).integers(0, 2 ** bits, (2, 8, 8, 3))
        net = _compare_params(path, model, bits, sym, 8)
        assert all(l.type == "f64" for b in net.blocks for l in (b.to_av, b.proj, b.mlp_up, b.mlp_down))


@pytest.mark.slow
def test_plane_params_shipped_slow():
    img = np.asarray(Image.open(SAMPLE).convert("RGB"))
    nat = load_catalog_model("hpac-natural").with_patch(32)
    _compare_params(WEIGHTS / "hpac-natural.safetensors", nat, 8, _crops(img, 32, 12), 32)
    gray = (img.astype(np.int64) @ np.array([299, 587, 114]) // 1000)[..., None]
    _compare_params(WEIGHTS / "hpac-gray.safetensors", load_catalog_model("hpac-gray").with_patch(32), 8,
                    _crops(gray, 32, 8), 32)
    g16 = gray * 257 + np.random.default_rng(0).integers(0, 257, gray.shape)
    _compare_params(WEIGHTS / "hpac-gray16.safetensors", load_catalog_model("hpac-gray16").with_patch(32), 16,
                    _crops(g16, 32, 8), 32)


# ---------------------------------------------------------------------------------------------
# (d) mixtures, windows and tables on random integer parameters

def _random_params(rng, M: int, C: int, K: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    CK, npair = C * K, C * (C - 1) // 2
    p = np.zeros((M, 3 * CK + K * npair), dtype=np.int64)
    spread = rng.choice([0, 64, 4096, 40000, 64 * 4096], size=(M, 1))
    p[:, :CK] = (rng.uniform(-1, 1, (M, CK)) * spread).astype(np.int64)            # logits
    p[:, CK:2 * CK] = rng.integers(-40 * 64, (2 ** bits + 40) * 64, (M, CK))     # means, 2^-6
    centre = rng.integers(-18 * 4096, 6 * 4096, (M, 1))                           # log-scales
    p[:, 2 * CK:3 * CK] = np.clip(centre + rng.integers(-8192, 8192, (M, CK)), -64 * 4096, 64 * 4096)
    p[:, 3 * CK:] = rng.integers(-4096, 4097, (M, K * npair))                     # tanh outputs
    x = rng.integers(0, 2 ** bits, (M, C))
    x[: M // 8] = 0
    x[M // 8: M // 4] = 2 ** bits - 1
    return p, 2 * x - (2 ** bits - 1)


@pytest.fixture(scope="module")
def natural():
    return load_catalog_model("hpac-natural")


@pytest.mark.parametrize("bits", [8, 16])
def test_mixture_units(natural, bits):
    inet = natural.integer(bits)
    C, K = inet.cfg.channels, inet.cfg.mixtures
    rng = np.random.default_rng(bits)
    p, q = _random_params(rng, 300, C, K, bits)
    for c in range(C):
        w, mu, S = integer.units(inet, p.astype(np.float64), c, q.astype(np.float64))
        rw, rmu, rS = R.units(p, c, q, C, K, bits)
        for name, a, b in (("w", rw, w), ("mu", rmu, mu), ("S", rS, S)):
            assert np.array_equal(a, np.asarray(b)), (c, name, np.argwhere(a != np.asarray(b))[:5].tolist())
    lg, ls = p[:, :K], p[:, 2 * C * K:2 * C * K + K]
    fw, fS = afc.mixture(lg, ls, bits)
    rw, rS = R.mixture(lg, ls, bits)
    assert np.array_equal(rw, np.asarray(fw)) and np.array_equal(rS, np.asarray(fS))


def _mixtures(natural, bits: int, M: int, seed: int):
    inet = natural.integer(bits)
    C, K = inet.cfg.channels, inet.cfg.mixtures
    p, q = _random_params(np.random.default_rng(seed), M, C, K, bits)
    return R.units(p, 2, q, C, K, bits)        # channel 2: means moved by the coefficients


def _compare_tables(start, step, n_bins, bits, w, mu, S, escape, low):
    """Both entry rules (version 10's, and that of 8 and 9)."""
    return sum(_compare_rule(start, step, n_bins, bits, w, mu, S, escape, low, rule) for rule in (True, False))


def _compare_rule(start, step, n_bins, bits, w, mu, S, escape, low, cdf_entries):
    order = np.argsort(n_bins, kind="stable")
    args = (start[order], step[order], n_bins[order], bits, w[order], mu[order], S[order], escape, low, cdf_entries)
    ref = R.bin_tables(*args)
    fast = list(afc.bin_tables(*args))
    assert [(a, b) for a, b, _ in fast] == [(a, b) for a, b, _ in ref]
    for (first, end, ft), (_, _, rt) in zip(fast, ref):
        ft = np.asarray(ft)
        assert ft.dtype == np.float32 and ft.shape == rt.shape, (ft.dtype, ft.shape, rt.shape)
        bad = np.argwhere(ft != rt)
        assert len(bad) == 0, f"rows {first}..{end}: {len(bad)} entries differ, first {bad[:5].tolist()}"
    return sum(len(t) for _, _, t in ref)


@pytest.mark.parametrize("low", [0, 1])
@pytest.mark.parametrize("bits", [8, 16])
def test_windows_and_tables(natural, bits, low):
    w, mu, S = _mixtures(natural, bits, 300, seed=100 + bits + low)
    lo, delta, width = R.windows(w, mu, S, bits, low)
    flo, fdelta, fwidth = (np.asarray(a) for a in afc.windows(w, mu, S, bits, low))
    for name, a, b in (("lo", lo, flo), ("delta", delta, fdelta), ("width", width, fwidth)):
        assert np.array_equal(a, b), (name, np.argwhere(a != b)[:5].tolist())
    assert (lo >= low).all() and (lo + width * delta <= 2 ** bits).all()
    if bits == 16:
        assert (delta > 1).sum() > 10 and (delta == 1).sum() > 10   # both stages exercised
    # stage 1: the windows' bins, with and without the escape entry
    for escape in (True, False):
        _compare_tables(lo, delta, width, bits, w, mu, S, escape, low)
    # stage 2: unit bins inside one random bin of every row with delta > 1
    big = np.nonzero(delta > 1)[0]
    if len(big):
        j = np.random.default_rng(7).integers(0, width[big])
        _compare_tables(lo[big] + j * delta[big], np.ones(len(big), dtype=np.int64), delta[big], bits,
                        w[big], mu[big], S[big], False, low)
    # arbitrary rows: starts below `low` and ends past 2^b included
    rng = np.random.default_rng(200 + bits + low)
    M = len(w)
    step = rng.choice([1, 2, 3, 8, 64, 2 ** (bits - 6)], M).astype(np.int64)
    n_bins = rng.integers(1, 257, M)
    start = rng.integers(-2 * 2 ** (bits - 6), 2 ** bits, M)
    start[:20] = low
    start[20:40] = 2 ** bits - n_bins[20:40] * step[20:40]
    for escape in (True, False):
        _compare_tables(start, step, n_bins, bits, w, mu, S, escape, low)


def test_tables_at_the_saturation_edges():
    """Bin edges placed exactly where a logistic's offset d = t - mu is +-17 S (the clamp) and
    where zf = (d (2^40 // S)) >> 24 first reaches +-2^20 (the saturation), and one 2^-13 step
    either side: the fast kernel, which looks a logistic up only between its saturated runs,
    against the reference's clamp-everything definition."""
    bits, low, n_bins = 16, 0, 9
    start, mu, S, w = [], [], [], []
    for s in (afc.S_MIN, afc.S_MIN + 1, 12345, 3 << 20, 1 << 33):
        inv = (1 << 40) // s
        z_run = -(-(afc.Z_LIMIT << 24) // inv)  # smallest |d| whose zf saturates
        for d in (17 * s, z_run, z_run - 1):
            for side in (-1, 1):
                for nudge in (-1, 0, 1):
                    t = (2 * 30000 - 1) << (afc.MU_FRAC - 1)  # edge 4 of a row starting at 29996 (step 1)
                    start.append(29996)
                    mu.append(t - side * d + nudge)  # d at edge 4 = side * d - nudge
                    S.append(s)
                    w.append(1 << afc.W_BITS)
    m = len(start)
    one = lambda v: np.array(v, np.int64).reshape(m, 1)
    _compare_tables(np.array(start, np.int64), np.ones(m, np.int64), np.full(m, n_bins, np.int64), bits,
                    one(w), one(mu), one(S), True, low)


@pytest.mark.parametrize("bits", [8, 16])
def test_mass_below(natural, bits):
    w, mu, S = _mixtures(natural, bits, 300, seed=300 + bits)
    ref = R.mass_below(1, w, mu, S)
    fast = np.asarray(afc.mass_below(1, w, mu, S))
    assert fast.dtype == np.float32
    assert np.array_equal(ref, fast), np.argwhere(ref != fast)[:5].tolist()
