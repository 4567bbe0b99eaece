"""Batch mode through the CLI: hpac encode -r / decode -r over a small tree, bit-exact."""
from __future__ import annotations

import numpy as np
import pytest

from hpac.tools.batch import format_summary, run_batch
from hpac.tools.cli import main
from hpac.io.readers import read_image
from hpac.io.writers import write_npy, write_png

from conftest import smooth_image


@pytest.fixture
def tree(tmp_path):
    """src/ with gray, RGB, 16-bit and signed images in two folders, plus one corrupt file."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    images = {
        "gray.png": smooth_image(20, 30, 1),
        "sub/rgb.png": smooth_image(21, 29, 3, seed=1),
        "sub/deep.png": smooth_image(19, 31, 1, np.uint16, seed=2),
        "signed.npy": smooth_image(18, 22, 1, np.int16, seed=3),
    }
    for name, arr in images.items():
        (src / name).write_bytes(write_npy(arr) if name.endswith(".npy") else write_png(arr))
    (src / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (src / "notes.txt").write_text("not an image")
    return src, images


def test_encode_decode_tree(tree, tmp_path, capsys):
    src, images = tree
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    assert main(["encode", "-r", str(src), "--out-dir", str(enc), "-e", "0", "--jobs", "2"]) == 1  # broken.png
    out, err = capsys.readouterr()
    assert "broken.png" in err and "cannot read image" in err
    assert out.split("\n")[1].split()[:4] == ["5", "4", "0", "1"]  # files, done, skipped, failed
    assert sorted(p.relative_to(enc).as_posix() for p in enc.rglob("*")) == [
        "gray.hpac", "signed.hpac", "sub", "sub/deep.hpac", "sub/rgb.hpac"]

    assert main(["decode", "-r", str(enc), "--out-dir", str(dec)]) == 0
    for name, arr in images.items():
        back = read_image(dec / (name[:-4] + (".npy" if arr.dtype == np.int16 else ".png"))).pixels
        assert back.dtype == arr.dtype and np.array_equal(back, arr)
    assert main(["decode", "-r", str(enc), "-q"]) == 0  # no --out-dir: beside the inputs
    assert np.array_equal(read_image(enc / "sub" / "rgb.png").pixels, images["sub/rgb.png"])
    capsys.readouterr()

    # a second run finds every output done and verified; the corrupt file still fails
    assert main(["encode", "-r", str(src), "--out-dir", str(enc), "-e", "0", "-q"]) == 1
    assert main(["decode", "-r", str(enc), "--out-dir", str(dec)]) == 0
    assert capsys.readouterr().out.split("\n")[1].split()[:4] == ["4", "0", "4", "0"]


def test_stale_output_is_not_overwritten(tree, tmp_path):
    src, images = tree
    (src / "sub" / "broken.png").unlink()
    enc = tmp_path / "enc"
    assert main(["encode", "-r", str(src), "--out-dir", str(enc), "-e", "0", "-q"]) == 0
    (src / "gray.png").write_bytes(write_png(255 - images["gray.png"]))  # the source changed
    res = {r.src.split("/")[-1]: r for r in run_batch("encode", src, enc, effort=0, progress=False)}
    assert res["gray.png"].status == "failed" and "does not match its source" in res["gray.png"].error
    assert {r.status for n, r in res.items() if n != "gray.png"} == {"skipped"}
    res = run_batch("encode", src, enc, effort=0, force=True, progress=False)
    assert sorted(r.status for r in res) == ["done"] * 4
    assert "bpsp" in format_summary(res)


def test_cli_refusals(tree, tmp_path, capsys):
    src, _ = tree
    assert main(["encode", str(src / "gray.png"), "--out-dir", str(tmp_path)]) == 1
    assert main(["encode", "-r", str(src), str(tmp_path / "x")]) == 1
    assert main(["decode", "-r", str(src)]) == 1  # no .hpac files there
    err = capsys.readouterr().err
    assert "add -r" in err and "--out-dir" in err and "no .hpac files" in err
