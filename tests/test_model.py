"""Causality of the masked network (float and integer) and CSI steps == the one-pass plane."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hpac.nn import integer
from hpac.nn.csi import CSIStepper, plane_params
from hpac.nn.architecture import causal_mask, ModelConfig
from conftest import make_model


def group_of(patch: int) -> np.ndarray:
    r, c = np.meshgrid(np.arange(patch), np.arange(patch), indexing="ij")
    return c + 2 * r


def test_masks_follow_the_skewed_diagonal():
    k = 7
    off = np.arange(k) - k // 2
    for strict in (True, False):
        m = causal_mask(k, strict)
        for i, dr in enumerate(off):
            for j, dc in enumerate(off):
                later = dc + 2 * dr
                assert bool(m[i, j]) == (later < 0 if strict else later <= 0)
    assert not causal_mask(k, True)[k // 2, k // 2]  # the stem never sees the current pixel


@pytest.mark.parametrize("channels", [1, 3])
def test_changing_a_pixel_never_changes_earlier_distributions(channels):
    """Perturb pixel p: params of every position whose group <= group(p) stay bit-identical."""
    model = make_model(channels, patch=16, dim=12, blocks=2, mixtures=3, seed=3)
    net = model.net
    grp = torch.from_numpy(group_of(16))
    x = torch.rand(1, channels, 16, 16) * 2 - 1
    with torch.no_grad():
        base = net(x)
        changed_later = 0
        for r, c in [(0, 0), (5, 5), (7, 2), (3, 14), (15, 15), (8, 0), (10, 9)]:
            for ch in range(channels):
                x2 = x.clone()
                x2[0, ch, r, c] += 0.9
                diff = (net(x2) - base).abs().amax(-1)[0]
                g = grp[r, c]
                assert torch.all(diff[grp <= g] == 0), f"pixel ({r},{c}) leaks into earlier groups"
                changed_later += int((diff[grp > g] > 0).sum())
        assert changed_later > 0  # the test would notice a network that ignores its input


def csi_vs_plane_pass(model, bits: int, batch: int) -> int:
    """Groups stepped; asserts the decoder's CSI steps give the encoder's one-pass integers."""
    net = model.integer(bits)
    cfg = net.cfg
    sym = np.random.default_rng(1).integers(0, 1 << bits, (batch, cfg.patch, cfg.patch, cfg.channels))
    ref = plane_params(net, sym)
    q = integer.centred(sym, bits)
    st = CSIStepper(net, batch)
    for g in range(st.sched.groups):
        r, c = st.sched.rows[g], st.sched.cols[g]
        assert np.array_equal(st.params(g), ref[:, r, c, :]), f"group {g}"
        st.write_pixels(g, q[:, r, c, :])
    return st.sched.groups


@pytest.mark.parametrize("channels,patch,batch", [(3, 8, 2), (1, 16, 3), (3, 11, 1)])
def test_csi_matches_the_plane_pass(channels, patch, batch):
    model = make_model(channels, patch=patch, dim=16, blocks=2, mixtures=3, seed=1)
    assert csi_vs_plane_pass(model, 8, batch) == 3 * patch - 2


def test_csi_matches_the_plane_pass_on_shipped_weights():
    from hpac.zoo.catalog import load_catalog_model

    csi_vs_plane_pass(load_catalog_model("hpac-natural").with_patch(24), 8, 1)
    csi_vs_plane_pass(load_catalog_model("hpac-gray16").with_patch(16), 12, 1)


def test_a_pixel_never_changes_earlier_integer_distributions():
    model = make_model(3, patch=16, dim=12, blocks=2, mixtures=3, seed=3)
    net = model.integer(8)
    grp = group_of(16)
    sym = np.random.default_rng(2).integers(0, 256, (1, 16, 16, 3))
    base = plane_params(net, sym)
    later = 0
    for r, c in [(0, 0), (5, 5), (7, 2), (15, 15), (10, 9)]:
        s2 = sym.copy()
        s2[0, r, c, 1] = 255 - s2[0, r, c, 1]
        diff = np.abs(plane_params(net, s2) - base).max(-1)[0]
        assert np.all(diff[grp <= grp[r, c]] == 0)
        later += int((diff[grp > grp[r, c]] > 0).sum())
    assert later > 0


def test_catalog_models_are_ultra_light():
    from hpac.zoo.catalog import CATALOG
    from hpac.nn.model import HPACNet

    for entry in CATALOG.values():
        assert HPACNet(entry.config).param_count() < 1_000_000
        assert entry.config.macs_per_pixel() > 10_000


@pytest.mark.parametrize("cfg", [ModelConfig(), ModelConfig(channels=1, dim=12, blocks=2, mlp_ratio=3, mixtures=4)])
def test_weight_shapes_are_the_float_network_s(cfg):
    """A weights file is checked against ModelConfig.weight_shapes (no torch): the float
    network's state_dict must hold exactly those."""
    from hpac.nn.model import HPACNet

    assert {k: tuple(v.shape) for k, v in HPACNet(cfg).state_dict().items()} == cfg.weight_shapes()


def test_plane_params_in_coding_order():
    """The encoder's plane in coding order (rows=) holds each real pixel's parameters of the plain pass."""
    from hpac.shards import coding_order

    model = make_model(3, patch=8, dim=16, blocks=2, mixtures=3, seed=2)
    net = model.integer(8)
    rng = np.random.default_rng(4)
    sym = rng.integers(0, 256, (3, 8, 8, 3))
    valid = np.ones((3, 8, 8), bool)
    valid[2, 5:] = False  # an image-edge patch
    valid[2, :, 6:] = False
    ref = plane_params(net, sym, valid)
    order, sizes, rows = coding_order(net.cfg, valid)
    assert order.size == valid.sum() == sizes.sum()
    out = plane_params(net, sym, valid, out=np.full((order.size + 1, net.cfg.n_params), np.nan), rows=rows)
    assert np.array_equal(out[:-1], ref.reshape(-1, net.cfg.n_params)[order])
    with pytest.raises(ValueError, match="rows"):
        plane_params(net, sym, valid, rows=rows)
