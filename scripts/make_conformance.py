"""Add to the conformance corpus: tests/conformance/*.hpac and manifest.json.

    .venv/bin/python scripts/make_conformance.py

Small files covering the format's paths (gray, RGB, RGBA, 16-bit, signed, odd sizes,
metadata, several shards, adapters, value maps, floored tables, zero flags), coded with two
tiny models stored beside them (tests/conformance/models: weights from integer hashing and
their integer grids, so they are the same on every machine) and with the shipped catalog
models. tests/test_conformance.py decodes every file and checks the pixel sha256 recorded
here, and re-encodes it to the same bytes, so a change that breaks existing files fails the
tests. The corpus only grows: files already in the manifest are kept as they are (a retrained
shipped model gets new files; a new format version, every case again beside the old ones, named
``<case>_v<version>``; version 8's cases have no suffix).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import corpus_models, scan_like, smooth_image  # noqa: E402

from hpac import codec, container, fileformat
from hpac.io import metadata  # noqa: E402
from hpac.zoo.catalog import load_catalog_model  # noqa: E402
from hpac.io.image import as_image, Image  # noqa: E402

OUT = ROOT / "tests" / "conformance"


EFFORT = {"tiny_rgb_adapted": 2, "tiny_rgb_table_adapted": 2, "tiny_zero_flags_e2": 2}  # per-image adapters
FLOORED = {"tiny_rgb_floored", "tiny_zero_flags_floored"}  # floored tables (the encoder's fallback)
PINNED = {"shipped_gray_u16": "hpac-gray", "shipped_gray16_p64": "hpac-gray16"}  # shipped cases coded with a model other than today's default
PATCH = {"shipped_gray16_p64": 64}  # coded with another P than the catalog's (files before session 6 have P = 64)


def cases() -> dict[str, tuple[np.ndarray, str]]:
    """name -> (pixels, which models: "tiny" or "shipped")."""
    sample = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(ROOT / "samples" / "ihc_crop.png").convert("RGB"))
    return {
        "tiny_gray_1x1": (np.full((1, 1, 1), 7, np.uint8), "tiny"),
        "tiny_gray_odd": (smooth_image(13, 9, 1), "tiny"),
        "tiny_rgb_odd": (smooth_image(11, 17, 3), "tiny"),
        "tiny_rgba": (smooth_image(9, 10, 4), "tiny"),
        "tiny_u16": (smooth_image(10, 7, 1, dtype=np.uint16), "tiny"),
        "tiny_i16": (smooth_image(7, 12, 1, dtype=np.int16), "tiny"),
        "tiny_rgb_shards": (smooth_image(40, 30, 3), "tiny"),  # 20 patches of 8x8: several shards
        "tiny_metadata": (smooth_image(6, 6, 1, dtype=np.uint16), "tiny"),
        "tiny_rgb_adapted": (smooth_image(48, 40, 3), "tiny"),
        "shipped_rgb": (sample[:48, :80], "shipped"),
        "shipped_gray_u16": (smooth_image(33, 21, 1, dtype=np.uint16), "shipped"),
        "shipped_gray16_u16": (smooth_image(33, 21, 1, dtype=np.uint16), "shipped"),
        "shipped_gray16_p64": (smooth_image(70, 21, 1, dtype=np.uint16), "shipped"),  # two 64-patches
        "tiny_gray_table": (smooth_image(48, 48, 1) // 16 * 16, "tiny"),  # value table
        "tiny_u16_offset": (smooth_image(30, 30, 1, dtype=np.uint16) + 20000, "tiny"),  # offset map
        "tiny_rgb_table_adapted": (smooth_image(48, 40, 3) // 8 * 8, "tiny"),  # table and adapters
        "tiny_rgb_floored": (smooth_image(21, 18, 3), "tiny"),  # floored AFC tables
        "tiny_zero_flags": (scan_like(30, 27), "tiny"),  # zero flags
        "tiny_zero_flags_floored": (scan_like(20, 21, np.uint8, floor=0), "tiny"),  # and floored tables
        "tiny_zero_flags_e2": (scan_like(40, 36, np.int16, floor=-1024), "tiny"),  # at effort 2 (no adapter pays here)
        "shipped_gray16_zero_flags": (scan_like(40, 36), "shipped"),
        "tiny_image_metadata": (smooth_image(6, 6, 3), "tiny"),  # metadata kind 2 (profile, text, resolution)
        "shipped_rgba_regions": (_page(sample), "shipped"),  # classical regions: WebP / JPEG XL beside the model
    }


def _page(sample: np.ndarray) -> np.ndarray:
    """A 256 x 384 RGBA web-page-like image: text on white, a photo over three of its six 128-patches."""
    from PIL import Image as PILImage, ImageDraw

    im = PILImage.new("RGB", (384, 256), "white")
    draw = ImageDraw.Draw(im)
    for y in range(130, 256, 13):
        draw.text((136, y), "let map: HashMap<&str, i32> = HashMap::new();", fill=(25, 25, 25))
    rgb = np.array(im)
    rgb[:128, :256] = sample[:128, :256]
    rgb[128:, :128] = sample[64:192, :128]
    return np.concatenate([rgb, np.full((256, 384, 1), 255, np.uint8)], axis=2)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    tiny = corpus_models(create=True)
    path = OUT / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    for case, (pixels, which) in cases().items():
        name = case if fileformat.FORMAT_VERSION == 8 else f"{case}_v{fileformat.FORMAT_VERSION}"
        if name in manifest:  # the corpus only grows
            continue
        img = as_image(pixels)
        if case == "tiny_metadata":
            img = Image(img.pixels, img.bits, 1, b"\x00" * 128 + b"DICM" + b"conformance")
        if case == "tiny_image_metadata":
            icc = (ROOT / "tests" / "data" / "metadata" / "canon_eos_rebel_t6.icc").read_bytes()
            meta = metadata.ImageMetadata(icc, b"", b"", ((b"tEXt", b"Title\x00conformance"),), (72, 1, 72, 1, 2))
            img = Image(img.pixels, img.bits, fileformat.METADATA_IMAGE, meta.to_bytes())
        models = tiny if which == "tiny" else ({1: load_catalog_model(PINNED[case])} if case in PINNED else None)
        if case in PATCH:
            models = {c: m.with_patch(PATCH[case]) for c, m in models.items()}
        data = codec.encode(img, models, threads=1, effort=EFFORT.get(case, 0), floored=case in FLOORED)
        (OUT / f"{name}.hpac").write_bytes(data)
        header, _ = container.read(data)
        manifest[name] = {
            "models": which,
            "shape": list(img.pixels.shape),
            "dtype": img.pixels.dtype.name,
            "pixel_sha256": hashlib.sha256(np.ascontiguousarray(img.pixels).tobytes()).hexdigest(),
            "file_sha256": hashlib.sha256(data).hexdigest(),
            "format_version": int.from_bytes(data[8:10], "little"),
            "effort": EFFORT.get(case, 0),
            "floored": case in FLOORED,
            "weights": [f"{p.model_name}:{p.weights_id}" for p in header.planes],
        }
        print(f"{name}: {len(data)} bytes")
    path.write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
