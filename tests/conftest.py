"""Shared fixtures: tiny random-weight models (mechanics tests) and synthetic images."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from hpac.nn import integer, quantize
from hpac.zoo.catalog import CodecModel, load_model_file
from hpac.adapters.lora import splitmix64
from hpac.zoo.weights import save_weights
from hpac.nn.mixture import normalise
from hpac.nn.integer import QuantSpec
from hpac.nn.architecture import ModelConfig
from hpac.nn.model import HPACNet
from hpac.zoo.weights import tensors_hash
from images import scan_like, smooth_image  # noqa: F401 (the tests import them from here too)

SAMPLE = Path(__file__).parent.parent / "samples" / "ihc_crop.png"  # the bundled sample


def make_model(channels: int, patch: int = 8, dim: int = 8, blocks: int = 1, mixtures: int = 2,
               seed: int = 0, name: str | None = None) -> CodecModel:
    torch.manual_seed(seed)
    net = HPACNet(ModelConfig(channels=channels, dim=dim, blocks=blocks, mixtures=mixtures, patch=patch)).eval()
    with torch.no_grad():
        for p in net.parameters():  # livelier than the default init, so masks and channels matter
            p.add_(torch.randn_like(p) * 0.1)
    state = quantize.float_state(net)
    return CodecModel(name or f"tiny{channels}", net.cfg, state, tensors_hash(state), {}, None, *tiny_grid(net))


TINY_SPEC = QuantSpec(lut_bits=8)  # small tables: the mechanics tests do not need 12 bits


def tiny_grid(net: HPACNet) -> tuple[dict, QuantSpec]:
    """Integer grids for a test model, calibrated on a synthetic image."""
    img = torch.from_numpy(smooth_image(32, 32, net.cfg.channels, seed=7).astype(np.int64))
    ranges = quantize.calibrate(net, [normalise(img[None], 8).permute(0, 3, 1, 2)], TINY_SPEC)
    return integer.grids(ranges, net.cfg, TINY_SPEC), TINY_SPEC


@pytest.fixture(scope="session")
def tiny_models() -> dict[int, CodecModel]:
    """{plane channels: model}: 1-channel and 3-channel random models with P=8."""
    return {1: make_model(1), 3: make_model(3)}


CORPUS_MODELS = Path(__file__).parent / "conformance" / "models"


def hashed_uniform(seed: int, n: int) -> np.ndarray:
    """(n,) float32 in [-1, 1) from integer hashing: the same numbers on every machine (unlike
    torch.randn, whose values depend on the CPU's vector width)."""
    h = splitmix64(np.arange(n, dtype=np.uint64) + np.uint64(seed << 32))
    return ((h >> np.uint64(40)).astype(np.float64) / 2.0**23 - 1.0).astype(np.float32)


def corpus_models(create: bool = False) -> dict[int, CodecModel]:
    """{plane channels: model} of the conformance corpus: tiny models stored with it
    (weights from integer hashing, grids calibrated once), the same on every machine."""
    out = {}
    for ch in (1, 3):
        path = CORPUS_MODELS / f"tiny{ch}.safetensors"
        if not path.exists() and create:
            net = HPACNet(ModelConfig(channels=ch, dim=8, blocks=1, mixtures=2, patch=8)).eval()
            with torch.no_grad():
                for i, p in enumerate(net.parameters()):
                    p.copy_(torch.from_numpy(hashed_uniform(ch * 1000 + i, p.numel()).reshape(p.shape)))
            grid, spec = tiny_grid(net)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_weights(net, path, {"data": "conformance corpus model: weights from integer hashing"}, grid,
                         dataclasses.asdict(spec))
        out[ch] = load_model_file(path, f"tiny{ch}")
    return out
