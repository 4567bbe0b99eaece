"""Training mechanics: weights out, resume == uninterrupted run, --init, validation figure."""
from __future__ import annotations

from pathlib import Path

import imagecodecs
import pytest
import torch

from hpac.model import ModelConfig
from hpac.train import TrainOptions, train
from hpac.weights import load_weights
from conftest import smooth_image

CFG = ModelConfig(channels=3, dim=8, blocks=1, mixtures=2, patch=8)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    for i in range(10):
        (d / f"im{i}.png").write_bytes(imagecodecs.png_encode(smooth_image(24, 20 + i, 3, seed=i)))
    return d


def _opts(data_dir, out, steps, **kw):
    return TrainOptions(data=[data_dir], out=out, cfg=CFG, steps=steps, batch=2, val_every=2,
                        ckpt_minutes=0.0, progress=False, threads=1, **kw)


def test_resume_reproduces_an_uninterrupted_run(data_dir, tmp_path):
    full = train(_opts(data_dir, tmp_path / "full.safetensors", 6))
    train(_opts(data_dir, tmp_path / "part.safetensors", 6, stop_after=3))
    resumed = train(_opts(data_dir, tmp_path / "part.safetensors", 6, resume=True))
    a, info_a = load_weights(tmp_path / "full.safetensors")
    b, info_b = load_weights(tmp_path / "part.safetensors")
    assert info_a["weights_id"] == info_b["weights_id"]
    assert full["val_bpsp"] == pytest.approx(resumed["val_bpsp"])
    assert info_a["steps"] == 6 and 0 < info_a["val_bpsp"] < 16


def test_init_starts_from_given_weights(data_dir, tmp_path):
    train(_opts(data_dir, tmp_path / "a.safetensors", 2))
    train(_opts(data_dir, tmp_path / "b.safetensors", 0, init=tmp_path / "a.safetensors"))
    a, _ = load_weights(tmp_path / "a.safetensors")
    b, _ = load_weights(tmp_path / "b.safetensors")
    for (_, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y)


def test_training_lowers_the_loss(data_dir, tmp_path):
    short = train(_opts(data_dir, tmp_path / "s.safetensors", 2))
    long = train(_opts(data_dir, tmp_path / "l.safetensors", 30))
    assert long["val_bpsp"] < short["val_bpsp"]
