"""The integer network (hpac.nn.integer): one pass and group steps agree exactly, on any thread
count and CPU capability; it tracks the float network; the float block is unchanged."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import SAMPLE, TINY_SPEC, make_model
from images import smooth_image, tiny_crops
from hpac.nn import integer, quantize
from hpac.nn.csi import CSIStepper, plane_params
from hpac.zoo.catalog import load_catalog_model
from hpac.nn.mixture import mixture_bits, nll_bits, normalise


TINY = TINY_SPEC


def _tiny_int(bits: int = 8, channels: int = 3, patch: int = 16):
    model = make_model(channels, patch=patch, dim=16, blocks=2, mixtures=3, seed=3)
    crops = tiny_crops(channels, patch)
    scales = quantize.calibrate(model.net, [normalise(torch.from_numpy(crops), 8).permute(0, 3, 1, 2)])
    return quantize.quantize(model.net, scales, bits, TINY), crops


def _step_all(inet, sym: np.ndarray, valid: np.ndarray, extent: np.ndarray | None = None) -> np.ndarray:
    """Every group's parameters from the decoder's stepper, placed as the plane pass places them."""
    b, p = sym.shape[:2]
    st = CSIStepper(inet, b, extent)
    q = integer.centred(sym, inet.bits) * valid[..., None]
    out = np.empty((b, p, p, inet.cfg.n_params))
    for g in range(st.sched.groups):
        r, c = st.sched.rows[g], st.sched.cols[g]
        out[:, r, c] = st.params(g)
        st.write_pixels(g, q[:, r, c])
    return out


@pytest.mark.parametrize("bits", [8, 12])
def test_group_steps_give_the_plane_pass_integers(bits):
    inet, crops = _tiny_int(bits)
    rng = np.random.default_rng(0)
    sym = rng.integers(0, 1 << bits, (3, 16, 16, 3))
    sym[:2] = crops[:2] << (bits - 8)
    valid = np.ones((3, 16, 16), bool)
    valid[2, 11:] = False  # image edge inside a patch: padding reads as q = 0
    valid[2, :, 13:] = False
    plane = plane_params(inet, sym, valid, extent=np.full((3, 2), 16))  # every position, padding too
    stepped = _step_all(inet, sym, valid)
    assert np.array_equal(plane, stepped)
    assert np.array_equal(plane, plane.round())  # integers throughout
    assert np.abs(plane[..., :9]).max() > 0


def test_steps_skip_what_reaches_no_real_pixel():
    """The decoder computes each patch only up to its needed extent (an image-edge patch):
    every real pixel still gets the plane pass's integers, and the skipped positions are
    really skipped (their parameters come back 0)."""
    inet, crops = _tiny_int(8)
    sym = crops[:4].copy()
    valid = np.ones((4, 16, 16), bool)
    valid[1, 5:] = False  # bottom edge
    valid[2, :, 3:] = False  # right edge
    valid[3, 2:] = False  # corner: two rows, two columns real
    valid[3, :, 2:] = False
    extent = integer.patch_extents(inet.cfg, valid)
    # 2 blocks + the stem, each reaching 1 row down and 3 columns right
    assert extent.tolist() == [[16, 16], [8, 16], [16, 12], [5, 11]]
    stepped = _step_all(inet, sym, valid, extent)
    for span in (None, 1, 4, 13):  # the encoder stops at the same extents, in steps of any span
        plane = plane_params(inet, sym, valid, span=span)
        assert np.array_equal(plane[valid], stepped[valid]), span  # padding inside the extents: values no one codes
    rows = np.arange(16)
    outside = (rows[:, None] >= extent[:, 0][:, None, None]) | (rows[None, :] >= extent[:, 1][:, None, None])
    assert outside.sum() > 100 and not stepped[outside].any() and not plane[outside].any()


def test_integers_do_not_depend_on_threads():
    """The products are BLAS calls: on 1 or 2 threads (the BLAS splits the sums) the same."""
    from threadpoolctl import threadpool_limits

    inet, crops = _tiny_int()
    big = np.concatenate([crops] * 8)  # products large enough for the BLAS to use its threads
    with threadpool_limits(1):
        one = plane_params(inet, big)
    with threadpool_limits(2):
        two = plane_params(inet, big)
    assert np.array_equal(one, two)


def _cpu_has(flag: str) -> bool:
    """Whether the CPU has an instruction-set flag (Linux; elsewhere False): torch's avx512
    kernels stop with SIGILL where it lacks them."""
    try:
        return any(flag in line.split() for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except OSError:
        return False


_DIGEST = """
import hashlib, sys
sys.path.insert(0, {tests!r})
from images import scan_like, smooth_image, tiny_crops
from hpac import codec
from hpac.nn.csi import plane_params
from hpac.zoo.catalog import load_model_file
models = {{c: load_model_file(f"{tests}/conformance/models/tiny{{c}}.safetensors", f"tiny{{c}}") for c in (1, 3)}}
h = hashlib.sha256(plane_params(models[3].integer(10), tiny_crops(3, 8) << 2).tobytes())
h.update(codec.encode(smooth_image(30, 21, 3), models, threads=1))
h.update(codec.encode(scan_like(25, 23), models, threads=1))  # 16-bit, zero flags
assert "torch" not in sys.modules  # coding is numpy and numba only
print(h.hexdigest())
"""


def test_integers_do_not_depend_on_cpu_capability():
    """The kernels numpy's BLAS picks for the CPU (OPENBLAS_CORETYPE: SSE3, AVX, AVX2 and,
    where the CPU has it, AVX-512 GEMMs, which sum in other orders) and its thread count change
    float32 results; they must change neither the integer network's numbers nor the files
    (network, AFC tables, zero flags, range coder), given the stored models of the
    conformance corpus. Nor must numba's kernels compiled for a generic x86-64 (SSE2, other
    loops vectorised or none) instead of this CPU. Torch is not loaded: coding never runs it."""
    code = _DIGEST.format(tests=os.path.dirname(__file__))
    settings = [{}, {"OPENBLAS_CORETYPE": "Prescott"}, {"OPENBLAS_CORETYPE": "Sandybridge"},
                {"OPENBLAS_CORETYPE": "Haswell"}, {"OPENBLAS_NUM_THREADS": "2"},
                {"NUMBA_CPU_NAME": "generic"}]  # (compiles every kernel once: ~15 s)
    if _cpu_has("avx512f"):
        settings.append({"OPENBLAS_CORETYPE": "SkylakeX"})
    digests = set()
    for extra in settings:
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "NUMBA_CPU_NAME")}
        env.update(extra)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_float_block_is_the_trained_formula():
    """architecture.gated_block in float arithmetic computes what the block always computed."""
    net = make_model(3, patch=16, dim=16, blocks=1, mixtures=3, seed=5).net
    blk = net.blocks[0]
    x = torch.randn(2, 16, 16, 16)
    a, v = blk.to_av(blk.norm1(x)).chunk(2, dim=-1)
    a = blk.dw(a.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)
    y = x + blk.proj(F.silu(a) * v)
    y = y + blk.mlp_down(F.gelu(blk.mlp_up(blk.norm2(y))))
    assert torch.equal(blk(x), y)


def test_integer_network_tracks_the_float_network():
    """Post-training quantisation of hpac-natural at the default widths costs little code length
    on the bundled sample (calibrated on its left half, measured on its right half)."""
    net = load_catalog_model("hpac-natural").net
    arr = np.asarray(Image.open(SAMPLE).convert("RGB"))
    sym = arr[:128, :256].astype(np.int64)
    cal, test = torch.from_numpy(sym[:, :128][None]), sym[:, 128:][None].copy()
    scales = quantize.calibrate(net, [normalise(cal, 8).permute(0, 3, 1, 2)])
    inet = quantize.quantize(net, scales, 8)
    with torch.no_grad():
        fb = nll_bits(net(normalise(torch.from_numpy(test), 8).permute(0, 3, 1, 2)), torch.from_numpy(test), 8, 3, 5).mean()
    ib = mixture_bits(quantize.mixture(plane_params(inet, test), inet), torch.from_numpy(test), 8).mean()
    assert 0.0 < float(ib / fb - 1) < 0.03


@pytest.mark.parametrize("rows,cols", [(5, 16), (16, 3), (1, 1), (9, 11)])
def test_the_plane_pass_may_stop_where_real_pixels_stop(rows, cols):
    """An image-edge patch: the pass over the needed extent gives the full pass's integers at
    every real pixel (what lies beyond reaches none of them), and computes nothing beyond."""
    inet, _ = _tiny_int()
    sym = np.random.default_rng(rows).integers(0, 256, (2, 16, 16, 3))
    valid = np.zeros((2, 16, 16), bool)
    valid[:, :rows, :cols] = True
    full = plane_params(inet, sym, valid, extent=np.full((2, 2), 16))
    r, c = integer.patch_extents(inet.cfg, valid).max(axis=0).tolist()
    assert (r, c) == (min(16, rows + 3), min(16, cols + 9))  # two blocks and the stem: 1 row, 3 columns each
    part = plane_params(inet, sym, valid)
    assert np.array_equal(part[:, :rows, :cols], full[:, :rows, :cols])
    beyond = np.ones((16, 16), bool)
    beyond[:r, :c] = False
    assert not part[:, beyond].any() and np.abs(full[:, beyond]).sum() > 0


def test_fake_quantised_forward_is_the_integer_network(tiny_models):
    """What --qat trains (hpac.nn.quantize.fake_quant_forward, float with straight-through roundings)
    codes what the integer network codes: its code length is the integer mixture's, not the
    float network's."""
    model = tiny_models[3].with_patch(16)
    sym = np.stack([smooth_image(16, 16, 3, seed=s) for s in range(4)]).astype(np.int64)
    st = torch.from_numpy(sym)
    x = normalise(st, 8).permute(0, 3, 1, 2)
    with torch.no_grad():
        fb = float(nll_bits(model.net(x), st, 8, 3, 2).mean())
        qb = float(nll_bits(quantize.fake_quant_forward(model.net, x, model.grid, model.spec, 8), st, 8, 3, 2).mean())
    inet = model.integer(8)
    ib = float(mixture_bits(quantize.mixture(plane_params(inet, sym), inet), st, 8).mean())
    assert abs(qb - ib) < 0.2 * abs(fb - ib), (fb, qb, ib)
