"""Slow: every image (8 and 16 bit) of ../shared/data/dev/{natural,satellite} round-trips through the CLI.

Run with ``.venv/bin/python -m pytest -m slow`` (needs the shared data folder beside the repo).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"
IMAGES = sorted((DEV / "natural").glob("*.png")) + sorted((DEV / "satellite").glob("*.png")) if DEV.exists() else []


@pytest.mark.slow
@pytest.mark.skipif(not IMAGES, reason="../shared/data/dev is not available")
@pytest.mark.parametrize("path", IMAGES, ids=[p.name for p in IMAGES])
def test_dev_image_roundtrips_through_cli(path, tmp_path):
    src = imagecodecs.png_decode(path.read_bytes())
    enc = subprocess.run([sys.executable, "-m", "hpac.cli", "encode", str(path), str(tmp_path / "x.hpac")],
                         capture_output=True)
    assert enc.returncode == 0, enc.stderr
    dec = subprocess.run([sys.executable, "-m", "hpac.cli", "decode", str(tmp_path / "x.hpac"), str(tmp_path / "y.png")],
                         capture_output=True)
    assert dec.returncode == 0, dec.stderr
    assert np.array_equal(imagecodecs.png_decode((tmp_path / "y.png").read_bytes()), src)
