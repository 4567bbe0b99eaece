"""Training mechanics: weights out, resume == uninterrupted run, --init, validation figure."""
from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import torch

from hpac.errors import HpacError
from hpac.nn.architecture import ModelConfig
from hpac.tools.train import train, TrainOptions
from hpac.zoo.weights import load_net
from conftest import smooth_image

CFG = ModelConfig(channels=3, dim=8, blocks=1, mixtures=2, patch=8)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    for i in range(10):
        (d / f"im{i}.png").write_bytes(imagecodecs.png_encode(smooth_image(24, 20 + i, 3, seed=i)))
    return d


def _opts(data_dir, out, steps, **kw):
    return TrainOptions(data=[data_dir], out=out, cfg=kw.pop("cfg", CFG), steps=steps, batch=2, val_every=2,
                        ckpt_minutes=0.0, progress=False, threads=1, **kw)


def test_resume_reproduces_an_uninterrupted_run(data_dir, tmp_path):
    full = train(_opts(data_dir, tmp_path / "full.safetensors", 6))
    train(_opts(data_dir, tmp_path / "part.safetensors", 6, stop_after=3))
    resumed = train(_opts(data_dir, tmp_path / "part.safetensors", 6, resume=True))
    a, info_a = load_net(tmp_path / "full.safetensors")
    b, info_b = load_net(tmp_path / "part.safetensors")
    assert info_a["weights_id"] == info_b["weights_id"]
    assert full["val_bpsp"] == pytest.approx(resumed["val_bpsp"])
    assert info_a["steps"] == 6 and 0 < info_a["val_bpsp"] < 16


def test_init_starts_from_given_weights(data_dir, tmp_path):
    train(_opts(data_dir, tmp_path / "a.safetensors", 2))
    train(_opts(data_dir, tmp_path / "b.safetensors", 0, init=tmp_path / "a.safetensors"))
    a, _ = load_net(tmp_path / "a.safetensors")
    b, _ = load_net(tmp_path / "b.safetensors")
    for (_, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y)


def test_init_grows_depth_and_changes_patch_without_changing_the_function(data_dir, tmp_path):
    from dataclasses import replace

    from hpac.tools.train import grow_from
    from hpac.nn.model import HPACNet

    train(_opts(data_dir, tmp_path / "a.safetensors", 3))
    small, _ = load_net(tmp_path / "a.safetensors")
    big = HPACNet(replace(CFG, blocks=3, patch=16))
    grow_from(big, small)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(big(x), small(x), atol=1e-6)
    with pytest.raises(Exception, match="do not fit"):
        grow_from(HPACNet(replace(CFG, dim=16)), small)
    with pytest.raises(Exception, match="do not fit"):
        grow_from(HPACNet(replace(CFG, blocks=0)), small)
    train(_opts(data_dir, tmp_path / "g.safetensors", 2, init=tmp_path / "a.safetensors", crop=12))
    grown, info = load_net(tmp_path / "g.safetensors")
    assert info["crop"] == 12 and grown.cfg.blocks == 1  # CFG: same depth, the new crop is recorded


def test_init_narrows_to_each_layers_first_channels(data_dir, tmp_path):
    """A narrower network (dim, MLP) starts from the first channels of every layer of --init
    (to_av's a and v halves apiece), and trains; a wider one, or another field, is refused."""
    from dataclasses import replace

    from hpac.nn.architecture import narrowed
    from hpac.nn.model import HPACNet
    from hpac.tools.train import grow_from

    train(_opts(data_dir, tmp_path / "a.safetensors", 2))
    wide, _ = load_net(tmp_path / "a.safetensors")
    cfg = replace(CFG, dim=6, mlp_ratio=1)
    narrow = HPACNet(cfg)
    grow_from(narrow, wide)
    w, n = wide.state_dict(), narrow.state_dict()
    assert set(n) == set(cfg.weight_shapes())
    assert torch.equal(n["blocks.0.to_av.weight"], torch.cat([w["blocks.0.to_av.weight"][:6, :6],
                                                              w["blocks.0.to_av.weight"][8:14, :6]]))
    assert torch.equal(n["blocks.0.mlp_down.weight"], w["blocks.0.mlp_down.weight"][:6, :6])
    assert torch.equal(n["head.weight"], w["head.weight"][:, :6])
    assert torch.equal(n["skip.weight"], w["skip.weight"])  # no channel of the width in it
    numpy_state = {k: v.numpy() for k, v in w.items()}
    for bad in (replace(CFG, dim=10), replace(CFG, mlp_ratio=3), replace(CFG, dim=6, kernel=5)):
        with pytest.raises(ValueError, match="not a narrower form"):
            narrowed(numpy_state, CFG, bad)
    train(_opts(data_dir, tmp_path / "n.safetensors", 2, init=tmp_path / "a.safetensors", cfg=cfg))
    trained, _ = load_net(tmp_path / "n.safetensors")
    assert trained.cfg == replace(cfg, patch=trained.cfg.patch)


def test_training_lowers_the_loss(data_dir, tmp_path):
    short = train(_opts(data_dir, tmp_path / "s.safetensors", 2))
    long = train(_opts(data_dir, tmp_path / "l.safetensors", 30))
    assert long["val_bpsp"] < short["val_bpsp"]


def test_step_planner_fits_the_schedule_to_the_deadline(monkeypatch):
    from hpac.tools import train as train_mod

    clock = [1000.0]
    monkeypatch.setattr(train_mod.time, "time", lambda: clock[0])
    planner = train_mod._StepPlanner(deadline=1000.0 + 600, step=0, every=100)
    assert planner.total(50, 20000) == 20000  # too few steps measured yet: keep the plan
    clock[0] += 100 * 0.5  # 100 steps at 0.5 s each
    total = planner.total(100, 20000)
    assert total == 100 + int((600 - 50 - 10 - 20 * 0.5) / 0.5)
    assert not planner.expired()
    clock[0] = 1000.0 + 600
    assert planner.expired()


def test_minutes_ends_the_run_with_a_final_validation(data_dir, tmp_path):
    summary = train(_opts(data_dir, tmp_path / "m.safetensors", 10**9, minutes=0.05))
    _, info = load_net(tmp_path / "m.safetensors")
    assert 0 < info["steps"] < 10**9 and summary["log_tail"][-1]["step"] == info["steps"]
    assert 0 < info["val_bpsp"] < 16


def test_amp_training_runs_in_bfloat16_and_keeps_float32_weights(data_dir, tmp_path):
    summary = train(_opts(data_dir, tmp_path / "a.safetensors", 4, amp=True))
    net, info = load_net(tmp_path / "a.safetensors")
    assert info["amp"] is True and 0 < summary["val_bpsp"] < 16
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_amp_leaves_high_bit_depth_crops_in_float32():
    from hpac.nn.model import HPACNet
    from hpac.tools.train import batch_bits

    torch.manual_seed(0)
    net = HPACNet(ModelConfig(channels=1, dim=8, blocks=1, mixtures=2, patch=8))
    sym8 = torch.randint(0, 256, (2, 8, 8, 1))
    sym12 = sym8 * 16 + torch.randint(0, 16, (2, 8, 8, 1))
    with torch.no_grad():
        # bfloat16 changes the 8-bit loss; a 12-bit batch must come out exactly as in float32
        assert batch_bits(net, sym8, 8, amp=True).item() != batch_bits(net, sym8, 8).item()
        assert batch_bits(net, sym12, 12, amp=True).item() == batch_bits(net, sym12, 12).item()


def test_level_shift_moves_high_bit_crops_and_leaves_8_bit_ones():
    import numpy as np

    from hpac.tools.train import _sample_batch

    ramp = np.add.outer(np.arange(16), np.arange(16))[:, :, None].astype(np.int32)
    hi = [("a", ramp + 1000, 11)]  # values 1000..1030 of an 11-bit range
    seen_bits, lows = set(), set()
    for seed in range(20):
        sym, bits = _sample_batch(hi, 8, 4, torch.Generator().manual_seed(seed), level_shift=0.5)
        seen_bits.add(bits)
        assert int(sym.min()) >= 0 and int(sym.max()) < 1 << bits
        d = sym - sym.amin(dim=(1, 2, 3), keepdim=True)  # the crops' content is unchanged
        assert int(d.max()) <= 28
        lows.update(int(v) for v in sym.amin(dim=(1, 2, 3)))
    assert seen_bits == {11, 12} and len(lows) > 20
    lo8 = [("b", ramp + 100, 8)]
    sym, bits = _sample_batch(lo8, 8, 4, torch.Generator().manual_seed(0), level_shift=1.0)
    assert bits == 8 and 100 <= int(sym.min()) and int(sym.max()) <= 130


def test_validation_split_ignores_where_the_folders_live_the_format_and_other_files(data_dir, tmp_path):
    import numpy as np

    from hpac.io.readers import read_image
    from hpac.tools.train import _load_images, split_train_val

    other = tmp_path / "a" / "copy"  # sorts before data_dir's path, stored as .npy
    other.mkdir(parents=True)
    for f in sorted(data_dir.glob("*.png")):
        np.save(other / f"{f.stem}.npy", read_image(f).pixels)
    names = [[n for n, _, _ in split_train_val(_load_images([d], False), every=3)[1]] for d in (data_dir, other)]
    assert names[0] == names[1] and names[0]
    np.save(other / "zz_added.npy", read_image(data_dir / "im0.png").pixels)  # a new file moves nothing
    grown = [n for n, _, _ in split_train_val(_load_images([other], False), every=3)[1]]
    assert [n for n in grown if n != "zz_added"] == names[0]


@pytest.mark.slow
def test_compiled_training_follows_the_eager_run(data_dir, tmp_path):
    """--compile changes how the loss is computed, not what: same steps, same weights to float
    rounding, and the written weights load as the plain module (compiling takes ~1 min on CPU)."""
    eager = train(_opts(data_dir, tmp_path / "e.safetensors", 3))
    comp = train(_opts(data_dir, tmp_path / "c.safetensors", 3, compile=True))
    a, _ = load_net(tmp_path / "e.safetensors")
    b, info = load_net(tmp_path / "c.safetensors")
    assert info["compile"] is True and comp["val_bpsp"] == pytest.approx(eager["val_bpsp"], rel=1e-3)
    for (ka, x), (kb, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-3)


def test_qat_trains_on_the_init_grids_and_saves_them(data_dir, tmp_path):
    """--qat fine-tunes --init on the grids stored with it: the file keeps them (the integer
    network that codes is the one trained for), the weights move, the run is marked."""
    train(_opts(data_dir, tmp_path / "base.safetensors", 3))
    _, base = load_net(tmp_path / "base.safetensors")
    summary = train(_opts(data_dir, tmp_path / "qat.safetensors", 4, init=tmp_path / "base.safetensors", qat=True))
    net, info = load_net(tmp_path / "qat.safetensors")
    assert summary["qat"] and info["qat"]
    assert info["grid"].keys() == base["grid"].keys()
    assert all(np.array_equal(info["grid"][k], base["grid"][k]) for k in base["grid"])
    assert info["weights_id"] != base["weights_id"]


def test_qat_needs_weights_to_start_from(data_dir, tmp_path):
    with pytest.raises(HpacError, match="--init"):
        train(_opts(data_dir, tmp_path / "q.safetensors", 2, qat=True))
