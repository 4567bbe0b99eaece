"""hpac bench: every codec verified by round trip, effort levels side by side, JSON and Markdown out."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from hpac.tools.bench import run_bench

from conftest import smooth_image


def test_bench_runs_levels_and_baselines(tmp_path):
    d = tmp_path / "natural"
    d.mkdir()
    Image.fromarray(smooth_image(40, 56, 3)).save(d / "a.png")
    Image.fromarray(smooth_image(33, 20, 1)[:, :, 0]).save(d / "b.png")
    out = run_bench([d], json_path=tmp_path / "r.json", threads=2, codecs=["hpac", "hpac_e1", "png", "jxl_e9"],
                    markdown=tmp_path / "r.md")
    for row in out["images"]:
        for name, m in row["codecs"].items():
            assert m["ok"], f"{name} failed its round trip on {row['image']}"
    entry = out["summary"]["natural (8-bit)"]
    assert set(entry["bpsp"]) == {"hpac", "hpac_e1", "png", "jxl_e9"}
    assert entry["hpac_e1_over_hpac"] <= 1.0  # adapting never makes files bigger
    assert json.loads((tmp_path / "r.json").read_text())["summary"] == json.loads(json.dumps(out["summary"]))
    assert set(out["warmup_s"]) == {"hpac", "hpac_e1", "png", "jxl_e9"}  # each codec's untimed first call
    md = (tmp_path / "r.md").read_text()
    assert "hpac_e1 / jxl_e9" in md and "natural (8-bit)" in md


def test_bench_of_the_current_folder_names_its_domain(tmp_path, monkeypatch):
    d = tmp_path / "kodak"
    d.mkdir()
    Image.fromarray(smooth_image(9, 11, 3)).save(d / "a.png")
    monkeypatch.chdir(d)  # `hpac bench .`: the relative paths have no parent name
    out = run_bench([d.relative_to(d)], threads=1, codecs=["png"])
    assert list(out["summary"]) == ["kodak (8-bit)"]


def test_an_opaque_alpha_dropped_by_png_and_webp_is_the_same_image(tmp_path):
    """PNG and WebP store an RGBA image whose alpha is opaque everywhere as RGB: the same image,
    not a failure. A dropped alpha that was not opaque, or other pixels, stay failures."""
    from hpac.tools.bench import same_image

    rgba = smooth_image(12, 10, 4)
    rgba[:, :, 3] = 255
    d = tmp_path / "screen"
    d.mkdir()
    Image.fromarray(rgba, "RGBA").save(d / "chart.png")
    out = run_bench([d], threads=1, codecs=["png", "webp", "jxl_e7"])
    assert all(m["ok"] for m in out["images"][0]["codecs"].values()), out["images"][0]["codecs"]
    assert same_image(rgba[:, :, :3].copy(), rgba)
    translucent = rgba.copy()
    translucent[0, 0, 3] = 254
    assert not same_image(translucent[:, :, :3].copy(), translucent)
    other = rgba[:, :, :3].copy()
    other[5, 5, 1] ^= 1
    assert not same_image(other, rgba)
    assert not same_image(rgba[:, :, :3].astype(np.uint16), rgba)


def test_bench_reports_the_classical_share(tmp_path):
    from PIL import ImageDraw

    d = tmp_path / "screen"
    d.mkdir()
    page = Image.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(page)
    for y in range(0, 256, 14):
        draw.text((6, y), "pub fn insert(&mut self, k: K, v: V) -> Option<V>", fill=(30, 30, 30))
    page.save(d / "page.png")
    out = run_bench([d], threads=1, codecs=["hpac", "png"], markdown=tmp_path / "r.md")
    m = out["images"][0]["codecs"]["hpac"]
    assert m["ok"] and m["classical"] == 1.0  # text on white: every patch to the classical codec
    assert "classical" not in out["images"][0]["codecs"]["png"]
    assert "hpac coded 100% of the subpixels" in (tmp_path / "r.md").read_text()
