"""The command line: round trips, stdin/stdout, exit codes, no partial outputs."""
from __future__ import annotations

import dataclasses

import subprocess
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

from hpac.zoo.weights import save_weights
from conftest import SAMPLE, smooth_image


def run(*args, stdin: bytes | None = None, cwd=None):
    return subprocess.run([sys.executable, "-m", "hpac", *map(str, args)], input=stdin,
                          capture_output=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory, tiny_models):
    d = tmp_path_factory.mktemp("w")
    paths = []
    for ch, m in tiny_models.items():
        p = d / f"tiny{ch}.safetensors"
        save_weights(m.net, p, None, m.grid, dataclasses.asdict(m.spec))
        paths.append(p)
    return paths


def _model_args(paths):
    return [a for p in paths for a in ("--model", p)]


def test_encode_decode_roundtrip_files(tmp_path, tiny_weights):
    img = smooth_image(19, 23, 3)
    src = tmp_path / "in.png"
    src.write_bytes(imagecodecs.png_encode(img))
    r = run("encode", src, *_model_args(tiny_weights))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "in.hpac").exists()
    r = run("decode", tmp_path / "in.hpac", tmp_path / "out.png", *_model_args(tiny_weights))
    assert r.returncode == 0, r.stderr
    assert np.array_equal(imagecodecs.png_decode((tmp_path / "out.png").read_bytes()), img)
    info = run("info", tmp_path / "in.hpac")
    assert info.returncode == 0 and b"19" in info.stdout and b"tiny3" in info.stdout


def test_a_weights_file_without_grids_is_refused_by_name(tmp_path, tiny_models):
    """Weights written before 0.2.0 have no integer grids: a one-line error, no output."""
    old = tmp_path / "old.safetensors"
    save_weights(tiny_models[3].net, old)
    src = tmp_path / "in.png"
    src.write_bytes(imagecodecs.png_encode(smooth_image(12, 15, 3)))
    r = run("encode", src, "--model", old)
    assert r.returncode != 0 and b"no integer grids" in r.stderr and b"Traceback" not in r.stderr
    assert not (tmp_path / "in.hpac").exists()


def _edited_weights(src: Path, dst: Path, edit) -> Path:
    """A copy of weights file ``src`` with ``edit(tensors, metadata)`` applied (ids recomputed)."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(src), framework="np") as f:
        meta, st = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    edit(st, meta)
    meta.pop("weights_id")
    save_file(st, str(dst), metadata=meta)
    return dst


@pytest.mark.parametrize("edit,message", [
    (lambda st, m: st.pop("grid.blocks.0.silu"), b"grids lack blocks.0.silu"),
    (lambda st, m: st.update({"grid.blocks.0.gelu": st["grid.blocks.0.gelu"][:10]}), b"has shape (10,)"),
    (lambda st, m: st.update({"grid.blocks.0.dw.s": np.array([np.nan], np.float32)}), b"no calibration makes"),
    (lambda st, m: st.update({"grid.tanh": st["grid.tanh"] * 1000}), b"no calibration makes"),
    (lambda st, m: m.update({"quant_spec": '{"act_bits": 40}'}), b"act_bits = 40 is outside"),
    (lambda st, m: m.update({"config": m["config"].replace('"patch": 8', '"patch": 0')}), b"patch = 0 is outside"),
    (lambda st, m: st.update({"head.bias": st["head.bias"][:3]}), b"do not fit the architecture"),
    (lambda st, m: st["blocks.0.proj.weight"].__setitem__((0, 0), np.inf), b"NaN or infinite"),
])
def test_a_weights_file_out_of_bounds_is_refused(tmp_path, tiny_weights, edit, message):
    """A weights file from elsewhere (--model) must not steer the integer network out of the
    bounds that keep its sums exact and its lookups inside their tables: a one-line error."""
    bad = _edited_weights(tiny_weights[1], tmp_path / "bad.safetensors", edit)
    src = tmp_path / "in.png"
    src.write_bytes(imagecodecs.png_encode(smooth_image(12, 15, 3)))
    r = run("encode", src, "--model", bad)
    assert r.returncode == 5 and message in r.stderr and b"Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "in.hpac").exists()


def test_stdin_stdout_and_16_bit_png(tmp_path, tiny_weights):
    img = smooth_image(12, 7, 1, np.uint16)[:, :, 0]
    r = run("encode", "-", "-", *_model_args(tiny_weights), stdin=imagecodecs.png_encode(img))
    assert r.returncode == 0, r.stderr
    d = run("decode", "-", "-", *_model_args(tiny_weights), stdin=r.stdout)
    assert d.returncode == 0, d.stderr
    back = imagecodecs.png_decode(d.stdout)
    assert back.dtype == np.uint16 and np.array_equal(back, img)


def test_npy_and_pgm_inputs(tmp_path, tiny_weights):
    from PIL import Image

    arr = smooth_image(9, 11, 1, np.int16)[:, :, 0]
    np.save(tmp_path / "s.npy", arr)
    assert run("encode", tmp_path / "s.npy", *_model_args(tiny_weights)).returncode == 0
    assert run("decode", tmp_path / "s.hpac", tmp_path / "back.npy", *_model_args(tiny_weights)).returncode == 0
    assert np.array_equal(np.load(tmp_path / "back.npy"), arr)
    gray = smooth_image(8, 13, 1)[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "g.pgm")
    assert run("encode", tmp_path / "g.pgm", *_model_args(tiny_weights)).returncode == 0
    assert run("decode", tmp_path / "g.hpac", *_model_args(tiny_weights)).returncode == 0
    assert np.array_equal(imagecodecs.png_decode((tmp_path / "g.png").read_bytes()), gray)


def test_decode_writes_the_format_its_suffix_names(tmp_path, tiny_weights):
    """.tif, .ppm and .pgm are written as such (until session 22 every suffix but .npy and
    .dcm got PNG bytes); a suffix hpac cannot write is refused before decoding, with no file."""
    from PIL import Image

    from hpac.io.readers import read_image

    rgb, deep = smooth_image(9, 14, 3), smooth_image(12, 7, 1, np.uint16)[:, :, 0]
    for arr, name in ((rgb, "rgb"), (deep, "deep")):
        (tmp_path / f"{name}.png").write_bytes(imagecodecs.png_encode(arr))
        assert run("encode", tmp_path / f"{name}.png", *_model_args(tiny_weights)).returncode == 0
        for suffix in (".tif", ".TIFF", ".ppm" if arr.ndim == 3 else ".pgm"):
            out = tmp_path / f"{name}{suffix}"
            r = run("decode", tmp_path / f"{name}.hpac", out, *_model_args(tiny_weights))
            assert r.returncode == 0, r.stderr
            if suffix.lower().startswith(".tif"):
                with Image.open(out) as im:  # Pillow as the reference reader (it rescales PGM maxvals)
                    assert np.array_equal(np.asarray(im), arr), out
            else:  # the image's significant bits: 12 here
                assert out.read_bytes().split(b"\n")[2] == (b"255" if arr.dtype == np.uint8 else b"4095")
            assert np.array_equal(read_image(out).pixels.reshape(arr.shape), arr)
    r = run("decode", tmp_path / "rgb.hpac", tmp_path / "rgb.jpg", *_model_args(tiny_weights))
    assert r.returncode != 0 and b"cannot write .jpg" in r.stderr and not (tmp_path / "rgb.jpg").exists()
    (tmp_path / "junk.hpac").write_bytes(b"not an hpac file")
    r = run("decode", tmp_path / "junk.hpac", tmp_path / "x.webp", *_model_args(tiny_weights))
    assert r.returncode != 0 and b"cannot write .webp" in r.stderr  # the name is checked first
    import hpac

    with pytest.raises(hpac.HpacError, match="cannot write a file without a suffix"):
        hpac.decode_file(tmp_path / "junk.hpac", tmp_path / "noext")
    rgba = np.dstack([rgb, rgb[:, :, :1]])
    (tmp_path / "a.png").write_bytes(imagecodecs.png_encode(rgba))
    assert run("encode", tmp_path / "a.png", *_model_args(tiny_weights)).returncode == 0
    r = run("decode", tmp_path / "a.hpac", tmp_path / "a.ppm", *_model_args(tiny_weights))
    assert r.returncode != 0 and b"PGM/PPM hold" in r.stderr and not (tmp_path / "a.ppm").exists()
    r = run("decode", tmp_path / "a.hpac", tmp_path / "a.tif", *_model_args(tiny_weights))
    with Image.open(tmp_path / "a.tif") as im:
        assert r.returncode == 0 and im.mode == "RGBA" and np.array_equal(np.asarray(im), rgba)


def test_verify_decodes_without_writing(tmp_path, tiny_weights):
    """`hpac verify` decodes each file (its pixel hash checked), writes nothing, and with
    --against compares with the original; a corrupt file or another original fails it."""
    rgb = smooth_image(11, 8, 3)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(imagecodecs.png_encode(rgb))
    (tmp_path / "a" / "y.png").write_bytes(imagecodecs.png_encode(rgb[::-1]))
    for name in ("x", "y"):
        assert run("encode", tmp_path / "a" / f"{name}.png", *_model_args(tiny_weights)).returncode == 0
    before = sorted(p.name for p in (tmp_path / "a").iterdir())
    r = run("verify", tmp_path / "a", *_model_args(tiny_weights))
    assert r.returncode == 0 and r.stdout.count(b"ok ") == 2 and b"all verify" in r.stdout, r.stderr
    r = run("verify", tmp_path / "a" / "x.hpac", "--against", tmp_path / "a" / "x.png", *_model_args(tiny_weights))
    assert r.returncode == 0 and b"identical to" in r.stdout, r.stderr
    r = run("verify", tmp_path / "a" / "x.hpac", "--against", tmp_path / "a" / "y.png", *_model_args(tiny_weights))
    assert r.returncode == 1 and b"decodes to an image other than" in r.stderr
    data = bytearray((tmp_path / "a" / "y.hpac").read_bytes())
    data[-20] ^= 0x10  # a payload byte
    (tmp_path / "a" / "y.hpac").write_bytes(bytes(data))
    r = run("verify", tmp_path / "a", *_model_args(tiny_weights))
    assert r.returncode in (3, 4) and b"FAILED" in r.stderr and b"y.hpac" in r.stderr and b"ok " in r.stdout
    assert b"Traceback" not in r.stderr and sorted(p.name for p in (tmp_path / "a").iterdir()) == before
    assert run("verify", tmp_path / "empty_dir_missing").returncode != 0


def test_never_overwrites_without_force(tmp_path, tiny_weights):
    src = tmp_path / "a.png"
    src.write_bytes(imagecodecs.png_encode(smooth_image(5, 5, 3)))
    (tmp_path / "a.hpac").write_bytes(b"keep")
    r = run("encode", src, *_model_args(tiny_weights))
    assert r.returncode != 0 and b"--force" in r.stderr
    assert (tmp_path / "a.hpac").read_bytes() == b"keep"
    assert run("encode", src, "--force", *_model_args(tiny_weights)).returncode == 0
    assert (tmp_path / "a.hpac").read_bytes()[:4] == b"HPAC"


@pytest.mark.parametrize("content", [b"", b"HPAC\r\n\x1a\n\x01", b"not an image at all"])
def test_bad_inputs_fail_cleanly(tmp_path, content):
    bad = tmp_path / "bad.hpac"
    bad.write_bytes(content)
    for cmd in (("decode", bad, tmp_path / "o.png"), ("info", bad), ("encode", bad, tmp_path / "o.hpac")):
        r = run(*cmd)
        assert r.returncode not in (0, 1) or b"error" in r.stderr
        assert r.returncode != 0
        assert b"Traceback" not in r.stderr and r.stderr.startswith(b"hpac: error:")
        assert len(r.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.hpac"]  # no partial outputs


def test_png_renamed_hpac_and_missing_file(tmp_path):
    fake = tmp_path / "x.hpac"
    fake.write_bytes(imagecodecs.png_encode(smooth_image(4, 4, 3)))
    r = run("decode", fake)
    assert r.returncode != 0 and b"PNG" in r.stderr
    r = run("decode", tmp_path / "missing.hpac")
    assert r.returncode != 0 and b"Traceback" not in r.stderr


def test_shipped_models_cli(tmp_path):
    out = tmp_path / "s.hpac"
    r = run("encode", SAMPLE, out, "--verify")
    assert r.returncode == 0, r.stderr
    r = run("decode", out, tmp_path / "s.png")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(imagecodecs.png_decode((tmp_path / "s.png").read_bytes()),
                          imagecodecs.png_decode(SAMPLE.read_bytes()))
    m = run("models")
    assert m.returncode == 0 and b"hpac-natural" in m.stdout and b"MACs/px" in m.stdout


def test_info_shows_value_maps_and_floored_tables():
    corpus = Path(__file__).parent / "conformance"
    r = run("info", corpus / "tiny_u16_offset.hpac")
    assert r.returncode == 0 and b"format version 8" in r.stdout and b"values offset by" in r.stdout
    r = run("info", corpus / "tiny_gray_table.hpac")
    assert r.returncode == 0 and b"value table of" in r.stdout
    r = run("info", corpus / "tiny_rgb_floored.hpac")
    assert r.returncode == 0 and b"floored" in r.stdout


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`hpac models -v | head -1`: the pipe closes under the writer; exit quietly, not with a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "hpac", "models", "-v"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.read(1)
    proc.stdout.close()  # the reader leaves while the writer still has lines to print
    err = proc.stderr.read()
    assert proc.wait(timeout=600) != 0
    assert b"Traceback" not in err, err.decode()


def test_a_jpeg_is_refused_in_one_line_unless_its_pixels_are_asked_for(tmp_path, tiny_weights):
    import io

    from PIL import Image as PILImage

    src = tmp_path / "photo.jpg"
    buf = io.BytesIO()
    PILImage.fromarray(smooth_image(12, 10, 3)).save(buf, "JPEG", quality=90)
    src.write_bytes(buf.getvalue())
    res = run("encode", src, tmp_path / "a.hpac", *_model_args(tiny_weights))
    assert res.returncode != 0 and b"Traceback" not in res.stderr
    assert len(res.stderr.decode().strip().splitlines()) == 1 and "--jpeg-pixels" in res.stderr.decode()
    assert not (tmp_path / "a.hpac").exists()
    res = run("encode", src, tmp_path / "b.hpac", "--jpeg-pixels", *_model_args(tiny_weights))
    assert res.returncode == 0, res.stderr.decode()
    assert run("decode", tmp_path / "b.hpac", tmp_path / "b.png", *_model_args(tiny_weights)).returncode == 0


def test_library_errors_name_the_api_and_the_command_line_adds_its_flag(tmp_path, tiny_models, tiny_weights):
    import hpac

    data = hpac.encode(np.zeros((4, 5), np.uint8), model=tiny_models[1])
    with pytest.raises(hpac.FormatError, match=r"raise max_pixels\)$") as exc:
        hpac.decode(data, model=tiny_models[1], max_pixels=10)
    assert exc.value.option == "max_pixels" and "--" not in str(exc.value)
    (tmp_path / "z.hpac").write_bytes(data)
    r = run("decode", tmp_path / "z.hpac", tmp_path / "z.png", "--max-pixels", 10, *_model_args(tiny_weights))
    err = r.stderr.decode().strip()
    assert r.returncode == hpac.FormatError.exit_code and err.endswith("raise max_pixels) (command line: --max-pixels)")
    assert not (tmp_path / "z.png").exists()


def test_first_run_says_it_compiles(tiny_models, capsys, monkeypatch):
    """Where numba's cache lacks hpac's kernels (the first run after an install, about 30 s),
    encode, decode and verify say why they wait; once compiled, nothing is said."""
    import argparse
    import os

    import hpac
    from hpac.entropy import afc
    from hpac.tools import cli

    hpac.encode(smooth_image(9, 9, 3), model=list(tiny_models.values()), threads=1)  # compiled or loaded here
    assert os.path.exists(afc.mixture_row._cache._cache_file._index_path)  # the notice reads numba's own locator
    cli._compile_notice(argparse.Namespace(quiet=False))
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(cli.os.path, "exists", lambda p: False)
    cli._compile_notice(argparse.Namespace(quiet=True))
    assert capsys.readouterr().err == ""
    cli._compile_notice(argparse.Namespace(quiet=False))
    assert "compiling its kernels" in capsys.readouterr().err


def test_out_of_memory_is_one_line_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    """A MemoryError while coding (in this process, or a worker's: hpac.parallel raises it as
    itself) ends the command with one line and a non-zero exit, and writes no output."""
    import hpac.api
    from hpac.tools import cli

    src, out = tmp_path / "in.png", tmp_path / "out.hpac"
    imagecodecs.imwrite(src, smooth_image(9, 9, 3))

    def no_room(*args, **kw):
        raise MemoryError("4.0 GiB for the shard")

    monkeypatch.setattr(hpac.api, "encode", no_room)
    assert cli.main(["encode", str(src), str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of memory (4.0 GiB for the shard)" in err and "Traceback" not in err
    assert not out.exists()
