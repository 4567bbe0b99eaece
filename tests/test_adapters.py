"""SARP-FT (hpac.adapters): adapters that travel in the file, decode bit-exactly, never cost bytes."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

import hpac
from hpac import codec, container, shards
from hpac.adapters import fit, lora
from hpac.adapters.effort import EFFORTS
from hpac.nn.architecture import ModelConfig

from conftest import make_model, smooth_image


def _adapted_file(img, models, effort=1, threads=1, seed=0):
    data = codec.encode(img, models, threads=threads, effort=effort, seed=seed)
    header, _ = container.read(data)
    return data, header


@pytest.mark.parametrize("shape,dtype", [((37, 29, 3), np.uint8), ((33, 41, 1), np.uint16), ((19, 23, 4), np.uint8),
                                         ((21, 17, 1), np.int16)])
def test_adapted_files_round_trip(shape, dtype, tiny_models):
    img = smooth_image(*shape, dtype=dtype)
    data, header = _adapted_file(img, tiny_models)
    back = codec.decode(data, list(tiny_models.values()), threads=2)
    assert back.dtype == img.dtype and np.array_equal(back, img)


def test_adapters_fitted_on_tiles_smaller_than_the_coding_patch_round_trip(tiny_models, monkeypatch):
    # hpac-gray16 codes P = 256 and fits on 128 tiles: here P = 8 and tiles of 4
    monkeypatch.setattr(fit, "FIT_PATCH", 4)
    img = smooth_image(37, 29, 3)
    data, header = _adapted_file(img, tiny_models, effort=2)
    assert header.planes[0].adapter and header.planes[0].patch == 8
    assert np.array_equal(codec.decode(data, list(tiny_models.values()), threads=2), img)


@pytest.mark.parametrize("margin", [-10.0, 0.999])
def test_adapted_planes_are_coded_at_the_adapted_patch_and_effort_zero_at_its_own(margin, tiny_models, monkeypatch):
    # hpac-natural codes adapted planes at P = 256 and effort 0 at P = 128: here 16 and 8
    models = {c: replace(m, adapted_patch=16) for c, m in tiny_models.items()}
    img = smooth_image(37, 45, 3)
    plain = codec.encode(img, models, threads=1, effort=0)
    assert container.read(plain)[0].planes[0].patch == 8
    assert plain == codec.encode(img, tiny_models, threads=1)
    monkeypatch.setattr(codec, "PLAIN_MARGIN", margin)  # -10: the adapted file is kept; 0.999: both are coded
    data = codec.encode(img, models, threads=1, effort=2)
    header, _ = container.read(data)
    if header.planes[0].adapter:
        assert header.planes[0].patch == 16
    else:  # the effort-0 file won: it is exactly the effort-0 file
        assert data == plain
    assert margin > 0 or header.planes[0].adapter
    assert len(data) <= len(plain)
    assert np.array_equal(codec.decode(data, list(tiny_models.values()), threads=2), img)


def test_adapters_are_used_and_pay(tiny_models):
    # random tiny models are a poor fit for a smooth image: adapting must find a gain
    img = smooth_image(48, 40, 3)
    plain = codec.encode(img, tiny_models, threads=1, effort=0)
    data, header = _adapted_file(img, tiny_models, effort=2)
    assert header.planes[0].adapter, "no adapter was kept on an image the random model fits badly"
    assert len(data) < len(plain)
    assert not any(p.adapter for p in container.read(plain)[0].planes)


@pytest.mark.parametrize("margin", [-10.0, 0.999])
def test_effort_zero_is_coded_only_when_the_gain_is_unclear(margin, tiny_models, monkeypatch):
    img = smooth_image(48, 40, 3)
    plain = codec.encode(img, tiny_models, threads=1, effort=0)
    calls = []
    real = codec._encode_planes
    monkeypatch.setattr(codec, "_encode_planes", lambda *a: calls.append(a[3]) or real(*a))
    monkeypatch.setattr(codec, "PLAIN_MARGIN", margin)  # -10: any gain is clear; 0.999: none is
    data = codec.encode(img, tiny_models, threads=1, effort=2)
    assert calls == ([True] if margin < 0 else [True, False])  # adapted first; effort 0 only if unclear
    assert len(data) < len(plain) and container.read(data)[0].planes[0].adapter
    assert np.array_equal(codec.decode(data, list(tiny_models.values())), img)


@pytest.mark.parametrize("patch,blocks,h,w,tile", [(128, 3, 64, 64, 80), (128, 3, 37, 29, 56), (128, 1, 1, 1, 8),
                                                   (128, 3, 300, 40, 128), (256, 3, 100, 90, 112), (256, 3, 900, 700, 128),
                                                   (8, 1, 48, 40, 8)])
def test_fit_tiles_shrink_to_a_plane_and_the_reach_of_the_network(patch, blocks, h, w, tile):
    assert fit.fit_tile(ModelConfig(channels=3, blocks=blocks, kernel=7, patch=patch), h, w) == tile


def test_a_plane_smaller_than_a_tile_is_fitted_on_its_own_size_and_round_trips(monkeypatch):
    model = make_model(3, patch=64)  # a 20 x 30 plane (+ the reach of 1 block: 6): one 40 x 40 tile, not 64 x 64
    sides = []
    real_fit = fit.fit
    monkeypatch.setattr(fit, "fit", lambda *a, **k: sides.append(a[1].shape[1:3]) or real_fit(*a, **k))
    img = smooth_image(20, 30, 3)
    data, header = _adapted_file(img, {3: model}, effort=2)
    assert sides == [(40, 40)] and header.planes[0].adapter
    assert np.array_equal(codec.decode(data, [model], threads=1), img)


def test_the_fit_steps_as_torch_adam_bit_for_bit():
    torch.manual_seed(0)
    ours = [torch.randn(7, 2, requires_grad=True), torch.randn(3, 2, requires_grad=True)]
    theirs = [t.detach().clone().requires_grad_(True) for t in ours]
    opt, ref = fit._Adam(ours, 2e-3), torch.optim.Adam(theirs, lr=2e-3)
    for _ in range(6):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        opt.step()
        ref.step()
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_an_adapted_encode_does_not_import_torch_dynamo():
    # constructing a torch.optim optimizer imports torch._dynamo: 1.7 s of every CLI encode at effort >= 1
    code = ("import sys; sys.path.insert(0, 'tests'); from conftest import make_model, smooth_image; "
            "from hpac import codec; codec.encode(smooth_image(24, 20, 3), {3: make_model(3)}, threads=1, effort=1); "
            "print('torch._dynamo' in sys.modules)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


@pytest.mark.parametrize("shape,dtype,noise", [((48, 40, 3), np.uint8, False), ((24, 20, 3), np.uint8, True),
                                               ((33, 41, 1), np.uint16, False), ((30, 26, 1), np.uint16, True)])
@pytest.mark.parametrize("tile", [None, 4])
def test_the_effort_zero_estimate_is_below_its_real_size(shape, dtype, noise, tile, tiny_models, monkeypatch):
    # skipping the effort-0 file is safe only if the estimate never exceeds what it really costs;
    # tile 4 < P = 8: the fit runs on tiles and the estimate must come from the coding patches
    rng = np.random.default_rng(1)
    img = rng.integers(0, 4096 if dtype == np.uint16 else 256, shape).astype(dtype) if noise else smooth_image(*shape, dtype=dtype)
    if tile:
        monkeypatch.setattr(fit, "FIT_PATCH", tile)
    fits = []
    real_fit = fit.fit

    def spy(*a, **k):
        assert a[1].shape[1] == (tile or 8) and (k["coding"] is not None) == bool(tile)
        fits.append(real_fit(*a, **k))
        return fits[-1]

    monkeypatch.setattr(fit, "fit", spy)
    monkeypatch.setattr(fit, "_fit", lambda pool, *a: fit.Fit(1, 1.0, [], b"", 0.0, float(fit._bits(pool, np.arange(len(pool.state.sym)))[:, 1].sum()), 0.0))
    plain, _ = container.read(codec.encode(img, tiny_models, threads=1, effort=0))
    codec.encode(img, tiny_models, threads=1, effort=1)
    assert len(fits) == len(plain.planes) >= 1
    for f, ph in zip(fits, plain.planes):
        assert 0 < f.effort0_floor / 8 <= sum(ph.shard_lengths)
    if tile:  # the coding patches' floor is summed by the fit's workers: the same with two
        codec.encode(img, tiny_models, threads=2, effort=1)
        n = len(plain.planes)
        assert [f.effort0_floor for f in fits[n:]] == [f.effort0_floor for f in fits[:n]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_never_bigger_than_effort_zero(seed, tiny_models):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)  # noise: nothing to learn
    img[: 8 * seed] = 128
    plain = codec.encode(img, tiny_models, threads=1, effort=0)
    for effort in sorted(e for e in EFFORTS if e):  # every level, the long ones included
        data = codec.encode(img, tiny_models, threads=1, effort=effort, seed=seed)
        assert len(data) <= len(plain)
        assert np.array_equal(codec.decode(data, list(tiny_models.values())), img)


def test_same_bytes_for_any_thread_count_and_seed_matters(tiny_models):
    img = smooth_image(40, 36, 3, seed=3)
    one = codec.encode(img, tiny_models, threads=1, effort=1, seed=5)
    two = codec.encode(img, tiny_models, threads=2, effort=1, seed=5)
    assert one == two
    assert codec.encode(img, tiny_models, threads=2, effort=1, seed=5) == one


@pytest.mark.skipif(sys.platform != "linux", reason="workers are forked only on Linux")
def test_torch_never_runs_in_a_thread_of_a_process_that_forks(tiny_models, monkeypatch):
    # a thread that ran an MKL GEMM frees MKL's buffers under a lock as it exits, possibly after
    # join() returned: a fork then hands the worker a held lock (hung 1 in ~100 encodes)
    calls = []

    def spy(fn):
        def wrapped(*args, **kwargs):
            calls.append((os.getpid(), threading.current_thread() is threading.main_thread()))
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(fit, "_patch_bits", spy(fit._patch_bits))
    monkeypatch.setattr(codec, "code_shard", spy(shards.code_shard))
    img = smooth_image(48, 40, 3)
    one = codec.encode(img, tiny_models, threads=1, effort=1)
    assert calls and all(main for _, main in calls)  # the spies see the work
    calls.clear()
    assert codec.encode(img, tiny_models, threads=2, effort=1) == one
    assert all(main for pid, main in calls if pid == os.getpid())


def test_adapter_integers_round_trip_and_merge_is_exact():
    model = make_model(3, dim=8, blocks=2)
    cfg, state = model.config, model.state
    rng = np.random.default_rng(0)
    ints = [rng.integers(-40, 41, (o, 3)) for o, _ in lora.adapter_shapes(cfg)]
    blob = lora.encode_ints(3, 2, ints)
    rank, qstep, back = lora.decode_ints(cfg, blob)
    assert rank == 3 and qstep == lora.QSTEPS[2]
    assert all(np.array_equal(a, b) for a, b in zip(ints, back))
    m1, m2 = lora.merge(state, cfg, 3, qstep, ints), lora.merge(state, cfg, 3, qstep, back)
    assert m1.keys() == m2.keys() == state.keys()
    assert all(np.array_equal(m1[k], m2[k]) and m1[k].dtype == np.float32 for k in m1)
    changed = [k for k in state if not np.array_equal(m1[k], state[k])]
    assert changed == lora.adapted_weights(cfg) and len(changed) == len(ints)  # exactly the adapted weights moved
    # the float network's own merge of the same integers: W + qstep/sqrt(in) B A, float64, rounded once
    net = model.net
    for j, (blk, name) in enumerate((b, t) for b in net.blocks for t in lora.TARGETS):
        w = getattr(blk, name).weight.detach().double().numpy()
        want = w + ints[j].astype(np.float64) @ lora.projection(j, 3, w.shape[1]) * (qstep / math.sqrt(w.shape[1]))
        assert np.array_equal(m1[lora.adapted_weights(cfg)[j]], want.astype(np.float32))


def test_the_fitting_view_of_an_adapter_is_the_low_rank_sum_and_its_gradient():
    """The fused training layer computes lin(x) + (x A^T) B^T and the same gradients (float64)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 5).double()
    for p in lin.parameters():
        p.requires_grad_(False)
    b = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    layer = fit._LoRAFA(lin, lora.projection(0, 2, 6), b)
    layer.a = layer.a.double()
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    want = lin(x) + (x @ layer.a.t()) @ b.t()
    assert torch.allclose(layer(x), want, rtol=1e-12, atol=1e-12)
    gy = torch.randn(3, 4, 5, dtype=torch.float64)
    got = torch.autograd.grad(layer(x), (x, b), gy)
    ref = torch.autograd.grad(want, (x, b), gy)
    assert all(torch.allclose(g, r, rtol=1e-10, atol=1e-12) for g, r in zip(got, ref))
    assert torch.autograd.gradcheck(lambda x, b: fit._LoRAFALinear.apply(x, lin.weight, lin.bias, layer.a, b),
                                    (x, b))


def test_corrupt_adapter_section_is_refused(tiny_models):
    cfg = tiny_models[3].config
    ints = [np.ones((o, 2), np.int64) for o, _ in lora.adapter_shapes(cfg)]
    blob = lora.encode_ints(2, 0, ints)
    for bad in (blob[:3], blob[:-4], bytes([0]) + blob[1:], bytes([2, 99]) + blob[2:]):
        with pytest.raises(hpac.FormatError):
            lora.decode_ints(cfg, bad)


def test_regions_grow_contiguously_to_everything():
    rng = np.random.default_rng(1)
    rows, cols = 6, 7
    order = fit.grow_order(rng.random(rows * cols), rows, cols)
    assert sorted(order.tolist()) == list(range(rows * cols))
    for k in range(1, len(order) + 1):  # every prefix is 4-connected
        cells = {divmod(int(i), cols) for i in order[:k]}
        seen, todo = set(), [next(iter(cells))]
        while todo:
            r, c = todo.pop()
            if (r, c) in seen:
                continue
            seen.add((r, c))
            todo += [n for n in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)) if n in cells]
        assert seen == cells
    fr = [fit.region_fraction(t, 20) for t in range(20)]
    assert fr[0] == pytest.approx(fit.REGION_START) and fr[-1] == 1.0 and fr == sorted(fr)


def test_effort_is_validated():
    with pytest.raises(hpac.HpacError, match="effort"):
        hpac.encode(np.zeros((4, 4), np.uint8), effort=99)
