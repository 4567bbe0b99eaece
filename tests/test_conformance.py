"""Committed .hpac files must keep decoding to the recorded pixels (and re-encode to the same
bytes): a change that breaks existing files fails here. Regenerate only on purpose with
scripts/make_conformance.py (format change: bump FORMAT_VERSION; retrained shipped model)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from hpac import codec, container
from hpac.errors import ModelMismatchError
from hpac.catalog import load_catalog_model
from hpac.determinism import fingerprint

from conftest import make_model

CORPUS = Path(__file__).parent / "conformance"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())


@pytest.fixture(scope="module")
def fixed_tiny():
    return [make_model(1), make_model(3)]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_conformance_file_decodes(name, fixed_tiny):
    entry = MANIFEST[name]
    data = (CORPUS / f"{name}.hpac").read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["file_sha256"], "corpus file changed on disk"
    header, _ = container.read(data)  # the format part holds on every machine
    assert [f"{p.model_name}:{p.weights_id}" for p in header.planes] == entry["weights"]
    assert int.from_bytes(data[8:10], "little") == entry["format_version"]
    if entry["arithmetic"] not in ("portable", fingerprint()):
        pytest.skip(f"the corpus was written on a machine whose float arithmetic differs from this one's "
                    f"(fingerprint {entry['arithmetic']}, here {fingerprint()}): its payloads decode only "
                    f"where the arithmetic matches (docs/determinism.md)")
    img = codec.decode_image(data, fixed_tiny if entry["models"] == "tiny" else None, threads=1)
    assert list(img.pixels.shape) == entry["shape"] and img.pixels.dtype.name == entry["dtype"]
    assert hashlib.sha256(np.ascontiguousarray(img.pixels).tobytes()).hexdigest() == entry["pixel_sha256"]
    # and today's encoder, given the models (and patch sizes) the file names, still writes the very same bytes
    if entry["models"] == "tiny":
        by_ch = {m.config.channels: m for m in fixed_tiny}
    else:
        header, _ = container.read(data)
        by_ch = {p.n_channels: load_catalog_model(p.model_name).with_patch(p.patch) for p in header.planes}
    assert codec.encode(img, by_ch, threads=1, effort=entry.get("effort", 0), floored=entry.get("floored", False),
                        portable=entry["arithmetic"] == "portable") == data


def test_files_of_another_patch_size_decode_with_the_same_weights():
    """P is written in the file: P = 64 files of earlier releases decode with today's weights."""
    header, _ = container.read((CORPUS / "shipped_gray16_p64.hpac").read_bytes())
    assert header.planes[0].patch == 64 != load_catalog_model("hpac-gray16").config.patch


def test_corpus_covers_both_versions():
    assert {e["format_version"] for e in MANIFEST.values()} == {2, 3, 4, 5, 6, 7}
    assert {e["arithmetic"] for e in MANIFEST.values() if e["format_version"] == 7} == {"portable"}


RETIRED = sorted((CORPUS / "retired").glob("*.hpac"))


@pytest.mark.parametrize("path", RETIRED, ids=[p.stem for p in RETIRED])
def test_files_of_retired_weights_are_refused_by_name(path, tmp_path):
    """Files written with weights that a retraining replaced name the model and weights they
    need; the CLI exits non-zero with that message and leaves no output file."""
    import subprocess
    import sys

    wid = path.stem.rsplit("_", 1)[1]
    data = path.read_bytes()
    model = container.read(data)[0].planes[0].model_name
    with pytest.raises(ModelMismatchError, match=f"{model} with weights {wid}"):
        codec.decode_image(data, None, threads=1)
    out = tmp_path / "out.png"
    run = subprocess.run([sys.executable, "-m", "hpac.cli", "decode", str(path), str(out)],
                         capture_output=True, text=True)
    assert run.returncode != 0 and wid in run.stderr and "Traceback" not in run.stderr
    assert not out.exists()
