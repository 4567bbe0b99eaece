"""Slow: every image of ../shared/data/dev (natural, satellite, medical; 8 and 16 bit) round-trips
bit-exactly through the CLI, at effort 0 and at effort 2 (and the default effort).

Run with ``.venv/bin/python -m pytest -m slow`` (needs the shared data folder beside the repo;
about 1 h on 2 cores: the default effort fine-tunes adapters on every image).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpac.adapters.effort import DEFAULT_EFFORT
from hpac.io.readers import read_image

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"
DOMAINS = ("natural", "satellite", "medical")
IMAGES = [p for d in DOMAINS for p in sorted((DEV / d).glob("*.png"))] if DEV.exists() else []


@pytest.mark.slow
@pytest.mark.skipif(not IMAGES, reason="../shared/data/dev is not available")
@pytest.mark.parametrize("effort", sorted({0, 2, DEFAULT_EFFORT}))
@pytest.mark.parametrize("path", IMAGES, ids=[f"{p.parent.name}/{p.name}" for p in IMAGES])
def test_dev_image_roundtrips_through_cli(path, effort, tmp_path):
    src = read_image(path)
    enc = subprocess.run([sys.executable, "-m", "hpac", "encode", str(path), str(tmp_path / "x.hpac"),
                          "--effort", str(effort)], capture_output=True)
    assert enc.returncode == 0, enc.stderr
    dec = subprocess.run([sys.executable, "-m", "hpac", "decode", str(tmp_path / "x.hpac"), str(tmp_path / "y.npy")],
                         capture_output=True)
    assert dec.returncode == 0, dec.stderr
    back = np.load(tmp_path / "y.npy")
    assert back.dtype == src.pixels.dtype
    assert np.array_equal(back.reshape(src.pixels.shape), src.pixels)
