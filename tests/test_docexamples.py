"""The README's Python examples and the API docstring run as written (doc examples are tests)."""
from __future__ import annotations

import doctest
import re
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

import hpac.api

from conftest import smooth_image

README = Path(__file__).parent.parent / "README.md"

# README Python blocks too big or too remote to run here, by a line they contain -> the test that runs their API
COVERED_ELSEWHERE = {
    "import zarr": "tests/test_numcodecs.py (a 64 x 512 x 512 volume would take minutes)",
    "import ray": "tests/test_ray.py (needs a Ray cluster and s3://)",
}


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def covered_elsewhere(block: str) -> str | None:
    """Where a block that does not run here is covered (None: it runs here)."""
    return next((where for key, where in COVERED_ELSEWHERE.items() if key in block), None)


def test_every_readme_python_block_is_run_here_or_covered():
    blocks = readme_python_blocks()
    assert len(blocks) >= 2
    covered = [b for b in blocks if covered_elsewhere(b)]
    assert len(covered) == len(COVERED_ELSEWHERE)  # a block renamed or removed: update the table above


@pytest.mark.parametrize("index", range(len(readme_python_blocks())))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    block = readme_python_blocks()[index]
    if covered_elsewhere(block):
        pytest.skip(covered_elsewhere(block))
    monkeypatch.chdir(tmp_path)  # the examples read and write files by relative names
    (tmp_path / "a.png").write_bytes(imagecodecs.png_encode(smooth_image(24, 31, 3)))
    (tmp_path / "scan.png").write_bytes(imagecodecs.png_encode(smooth_image(21, 17, 1, np.uint16)[:, :, 0].copy()))
    exec(compile(block, f"README.md python block {index}", "exec"), {})
    made = {p.name for p in tmp_path.iterdir()} - {"a.png", "scan.png"}
    assert made, "the example wrote nothing"  # both runnable blocks write files (a.hpac / scan.hpac)


def test_api_docstring_example():
    result = doctest.testmod(hpac.api, verbose=False)
    assert result.attempted >= 3 and result.failed == 0
