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
from hpac import container, fileformat
from hpac.errors import FormatError
from hpac.io import readers

HARNESS = Path(__file__).parent / "fuzz_decoder.py"


def test_seeds_decode():
    seeds = fuzz_decoder.seed_files()
    headers = [container.read(s)[0] for s in seeds]  # every section of the format is fuzzed
    assert any(p.adapter for h in headers for p in h.planes) and any(p.value_map for h in headers for p in h.planes)
    assert any(h.floored_tables for h in headers) and any(p.zero_flags for h in headers for p in h.planes)
    assert any(h.metadata for h in headers) and any(p.regions for h in headers for p in h.planes)
    assert {h.metadata_kind for h in headers} >= {1, 2}
    for data in seeds:
        fuzz_decoder.one_input(b"\x00" + data)  # must decode cleanly
        fuzz_decoder.one_input(b"\x01" + data)  # CRC recomputation of an intact file is a no-op


def test_plain_mutation_fuzz():
    assert fuzz_decoder.run_plain(runs=400, seed=1, time_limit=300) == 400  # every input run, none crashed (about 5 s)


def test_input_seeds_read():
    seeds = fuzz_input.seed_files()
    magics = {b"\x89PNG", b"II*\x00", b"\x93NUM", b"P5\n", b"P6\n", b"P2\n", b"\xff\x0a", b"RIFF"}
    assert {m for m in magics for s in seeds if s.startswith(m)} == magics  # every input format is fuzzed
    assert sum(s[128:132] == b"DICM" for s in seeds) == len(fuzz_input.DICOM_SEEDS)
    for data in seeds:
        fuzz_input.one_input(data)
        assert readers.read_image(data).pixels.size > 0  # each seed is a valid image, not an early refusal


def test_plain_input_fuzz():
    assert fuzz_input.run_plain(runs=600, seed=1, time_limit=300) == 600  # every input run, none crashed


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed here")
def test_atheris_fuzz(tmp_path):
    r = subprocess.run([sys.executable, str(HARNESS), "-runs=300", "-timeout=20"], capture_output=True,
                       timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    done = re.search(rb"Done (\d+) runs", r.stderr)  # libFuzzer may count a run or two more than asked
    assert done and int(done.group(1)) >= 300, r.stderr[-2000:]


def test_the_fuzzers_out_of_memory_input_is_refused_in_the_header():
    """An atheris find: 116 bytes declaring 4,294,901,761 patches per shard made the decoder
    allocate 8 GB before shards were bounded in the header (found on a version-6 file, whose
    layout version 8 keeps: here relabelled as version 8)."""
    data = bytearray(base64.b64decode(
        "AUhQQUMNChoKBgBdAAAAAdAAAAACAAABAAgBbjQLnAFKepicpUTmu3gKLHiQHT+zN3Y4owYRhRevoB08XPzMAAABCAABAP//"
        "BXRpbnkxw5z6InVEJKgBAAAABAAAAAAAAAAAAAAAAQAAAAAARR/ZqwAAAIA="))
    data[9:11] = fileformat.FORMAT_VERSION.to_bytes(2, "little")
    data = bytes(data)
    with pytest.raises(FormatError, match="patches per shard"):
        container.read(fuzz_decoder.fix_crcs(data[1:]))
    fuzz_decoder.one_input(data)
