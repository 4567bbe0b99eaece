"""Causality of the masked network and CSI == full masked forward."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hpac.csi import CSIStepper
from hpac.model import ModelConfig, causal_mask
from conftest import make_model


def group_of(patch: int) -> torch.Tensor:
    r, c = torch.meshgrid(torch.arange(patch), torch.arange(patch), indexing="ij")
    return c + 2 * r


def test_masks_follow_the_skewed_diagonal():
    k = 7
    off = torch.arange(k) - k // 2
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
    grp = group_of(16)
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


def csi_vs_full_forward(net, batch: int) -> tuple[int, float]:
    """(groups stepped, worst |CSI - full forward| over all params) on random pixels."""
    cfg = net.cfg
    x = torch.rand(batch, cfg.channels, cfg.patch, cfg.patch) * 2 - 1
    with torch.no_grad():
        ref = net(x)
    st = CSIStepper(net, batch)
    worst = 0.0
    for g in range(st.sched.groups):
        r, c = st.sched.rows[g], st.sched.cols[g]
        worst = max(worst, (st.params(g) - ref[:, r, c, :]).abs().max().item())
        st.write_pixels(g, x.permute(0, 2, 3, 1)[:, r, c, :])
    return st.sched.groups, worst


@pytest.mark.parametrize("channels,patch,batch", [(3, 8, 2), (1, 16, 3), (3, 11, 1)])
def test_csi_matches_full_forward(channels, patch, batch):
    model = make_model(channels, patch=patch, dim=16, blocks=2, mixtures=3, seed=1)
    groups, worst = csi_vs_full_forward(model.net, batch)
    assert groups == 3 * patch - 2
    assert worst < 1e-4


def test_csi_matches_full_forward_on_shipped_weights():
    from hpac.catalog import load_catalog_model

    _, worst = csi_vs_full_forward(load_catalog_model("hpac-natural").net, 1)
    assert worst < 1e-3


def test_catalog_models_are_ultra_light():
    from hpac.catalog import CATALOG
    from hpac.model import HPACNet

    for entry in CATALOG.values():
        assert HPACNet(entry.config).param_count() < 1_000_000
        assert entry.config.macs_per_pixel() > 0
