"""Committed .hpac files must keep decoding to the recorded pixels, and those of the current
format version re-encode to the same bytes: a change that breaks existing files fails here.
The corpus only grows (scripts/make_conformance.py: a format change bumps FORMAT_VERSION and
adds every case again for it; a retrained shipped model adds its files)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hpac import codec, container, fileformat
from hpac.errors import FormatError
from hpac.zoo.catalog import load_catalog_model

from conftest import corpus_models

CORPUS = Path(__file__).parent / "conformance"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())


@pytest.fixture(scope="module")
def fixed_tiny():
    return corpus_models()


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_conformance_file_decodes(name, fixed_tiny):
    """On every machine: the integer arithmetic leaves nothing to skip."""
    entry = MANIFEST[name]
    data = (CORPUS / f"{name}.hpac").read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["file_sha256"], "corpus file changed on disk"
    header, _ = container.read(data)
    assert [f"{p.model_name}:{p.weights_id}" for p in header.planes] == entry["weights"]
    assert int.from_bytes(data[8:10], "little") == entry["format_version"]
    tiny = list(fixed_tiny.values())
    img = codec.decode_image(data, tiny if entry["models"] == "tiny" else None, threads=1)
    assert list(img.pixels.shape) == entry["shape"] and img.pixels.dtype.name == entry["dtype"]
    assert hashlib.sha256(np.ascontiguousarray(img.pixels).tobytes()).hexdigest() == entry["pixel_sha256"]
    # and today's encoder, given the models (and patch sizes) the file names, still writes the very same bytes
    if entry["format_version"] != fileformat.FORMAT_VERSION:
        return  # an earlier version's file: decoding it is what must last (its case has a newer twin)
    if entry["models"] == "tiny":
        by_ch = fixed_tiny
    else:
        by_ch = {p.n_channels: load_catalog_model(p.model_name).with_patch(p.patch) for p in header.planes}
    again = codec.encode(img, by_ch, threads=1, effort=entry.get("effort", 0), floored=entry.get("floored", False))
    assert _model_part(again) == _model_part(data)
    assert again == data or _model_part(data) != data  # byte for byte, but for other libwebp / libjxl builds' streams


def _model_part(data: bytes) -> bytes:
    """The file with each classical region stream cut to its codec byte and bitmap (hpac.entropy.regions):
    what hpac's own arithmetic and decisions write; WebP / JPEG XL builds may write other streams."""
    header, payload = container.read(data)
    if not any(p.regions for p in header.planes):
        return data
    planes = tuple(replace(p, regions=p.regions[: 1 + -(-p.classical(header.height, header.width).size // 8)])
                   for p in header.planes)
    return container.write(replace(header, planes=planes), [bytes(payload)])


def test_files_of_another_patch_size_decode_with_the_same_weights():
    """P is written in the file: a P = 64 file decodes with the P = 256 catalog model."""
    header, _ = container.read((CORPUS / "shipped_gray16_p64.hpac").read_bytes())
    assert header.planes[0].patch == 64 != load_catalog_model("hpac-gray16").config.patch


OLD = sorted((CORPUS / "v0.1.0").glob("*.hpac"))


@pytest.mark.parametrize("path", OLD, ids=[p.stem for p in OLD])
def test_files_of_release_0_1_0_are_refused_naming_it(path, tmp_path):
    """Files of format versions 2-7 (hpac 0.1.0's corpus) get one line naming the release that
    reads them; the CLI exits non-zero with it and leaves no output file."""
    import subprocess
    import sys

    data = path.read_bytes()
    with pytest.raises(FormatError, match="decode it with hpac 0.1.0"):
        codec.decode_image(data, None, threads=1)
    out = tmp_path / "out.png"
    run = subprocess.run([sys.executable, "-m", "hpac", "decode", str(path), str(out)],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "hpac 0.1.0" in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not out.exists()
