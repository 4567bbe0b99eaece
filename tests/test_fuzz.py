"""Bounded fuzz runs of the decoder (the long run is documented in tests/fuzz_decoder.py)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import fuzz_decoder

HARNESS = Path(__file__).parent / "fuzz_decoder.py"


def test_seeds_decode():
    seeds = fuzz_decoder.seed_files()
    assert {s[8:10] for s in seeds} == {b"\x02\x00", b"\x03\x00", b"\x04\x00", b"\x05\x00", b"\x06\x00", b"\x07\x00"}  # every format version is fuzzed
    for data in seeds:
        fuzz_decoder.one_input(b"\x00" + data)  # must decode cleanly
        fuzz_decoder.one_input(b"\x01" + data)  # CRC recomputation of an intact file is a no-op


def test_plain_mutation_fuzz():
    assert fuzz_decoder.run_plain(runs=400, seed=1, time_limit=120) >= 1


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed here")
def test_atheris_fuzz(tmp_path):
    r = subprocess.run([sys.executable, str(HARNESS), "-runs=300", "-timeout=20"], capture_output=True,
                       timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert b"Done 300 runs" in r.stderr
