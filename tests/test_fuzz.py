"""Bounded fuzz runs of the decoder (the long run is documented in tests/fuzz_decoder.py)."""
from __future__ import annotations

import base64
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fuzz_decoder
import fuzz_input
from hpac import container, imageio
from hpac.errors import FormatError

HARNESS = Path(__file__).parent / "fuzz_decoder.py"


def test_seeds_decode():
    seeds = fuzz_decoder.seed_files()
    assert {s[8:10] for s in seeds} == {b"\x02\x00", b"\x03\x00", b"\x04\x00", b"\x05\x00", b"\x06\x00", b"\x07\x00"}  # every format version is fuzzed
    for data in seeds:
        fuzz_decoder.one_input(b"\x00" + data)  # must decode cleanly
        fuzz_decoder.one_input(b"\x01" + data)  # CRC recomputation of an intact file is a no-op


def test_plain_mutation_fuzz():
    assert fuzz_decoder.run_plain(runs=400, seed=1, time_limit=120) >= 1


def test_input_seeds_read():
    seeds = fuzz_input.seed_files()
    magics = {b"\x89PNG", b"II*\x00", b"\x93NUM", b"P5\n", b"P6\n", b"P2\n"}
    assert {m for m in magics for s in seeds if s.startswith(m)} == magics  # every input format is fuzzed
    assert sum(s[128:132] == b"DICM" for s in seeds) == len(fuzz_input.DICOM_SEEDS)
    for data in seeds:
        fuzz_input.one_input(data)
        assert imageio.read_image(data).pixels.size > 0  # each seed is a valid image, not an early refusal


def test_plain_input_fuzz():
    assert fuzz_input.run_plain(runs=600, seed=1, time_limit=120) >= 1


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed here")
def test_atheris_fuzz(tmp_path):
    r = subprocess.run([sys.executable, str(HARNESS), "-runs=300", "-timeout=20"], capture_output=True,
                       timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    done = re.search(rb"Done (\d+) runs", r.stderr)  # libFuzzer may count a run or two more than asked
    assert done and int(done.group(1)) >= 300, r.stderr[-2000:]


def test_the_fuzzers_out_of_memory_input_is_refused_in_the_header():
    """An atheris find: 116 bytes declaring 4,294,901,761 patches per shard made the decoder
    allocate 8 GB before shards were bounded in the header."""
    data = base64.b64decode(
        "AUhQQUMNChoKBgBdAAAAAdAAAAACAAABAAgBbjQLnAFKepicpUTmu3gKLHiQHT+zN3Y4owYRhRevoB08XPzMAAABCAABAP//"
        "BXRpbnkxw5z6InVEJKgBAAAABAAAAAAAAAAAAAAAAQAAAAAARR/ZqwAAAIA=")
    with pytest.raises(FormatError, match="patches per shard"):
        container.read(fuzz_decoder.fix_crcs(data[1:]))
    fuzz_decoder.one_input(data)
