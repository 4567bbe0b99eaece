"""(Re)write the conformance corpus: tests/conformance/*.hpac and manifest.json.

    .venv/bin/python scripts/make_conformance.py

Small files covering the format's paths (gray, RGB, RGBA, 16-bit, signed, odd sizes,
metadata, several shards), coded with the fixed-seed tiny test models and with the shipped
catalog models. tests/test_conformance.py decodes every file and checks the pixel sha256
recorded here, so a change that breaks existing files fails the tests. Run this only on
purpose: after a format change (bump container.FORMAT_VERSION and say so in docs/format.md)
or after retraining a shipped model (its files then name weights that no longer exist).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import make_model, scan_like, smooth_image  # noqa: E402

from hpac import codec, container  # noqa: E402
from hpac.catalog import load_catalog_model  # noqa: E402
from hpac.determinism import fingerprint  # noqa: E402
from hpac.imageio import Image, as_image  # noqa: E402

OUT = ROOT / "tests" / "conformance"


EFFORT = {"tiny_rgb_adapted": 2, "tiny_rgb_table_adapted": 2, "tiny_zero_flags_adapted": 2,
          "portable_tiny_zero_flags_adapted": 2}  # per-image adapters
FLOORED = {"tiny_rgb_floored", "tiny_zero_flags_floored", "portable_tiny_rgb_floored"}  # floored tables (the encoder's fallback)
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
        "tiny_gray_table": (smooth_image(48, 48, 1) // 16 * 16, "tiny"),  # value table (format version 4)
        "tiny_u16_offset": (smooth_image(30, 30, 1, dtype=np.uint16) + 20000, "tiny"),  # offset map (version 4)
        "tiny_rgb_table_adapted": (smooth_image(48, 40, 3) // 8 * 8, "tiny"),  # table and adapters
        "tiny_rgb_floored": (smooth_image(21, 18, 3), "tiny"),  # floored AFC tables (version 5)
        "tiny_zero_flags": (scan_like(30, 27), "tiny"),  # zero flags (version 6)
        "tiny_zero_flags_floored": (scan_like(20, 21, np.uint8, floor=0), "tiny"),  # and floored tables
        "tiny_zero_flags_adapted": (scan_like(40, 36, np.int16, floor=-1024), "tiny"),  # and adapters
        "shipped_gray16_zero_flags": (scan_like(40, 36), "shipped"),
        # portable arithmetic (version 7): these decode, bit for bit, on every machine
        "portable_tiny_rgb_odd": (smooth_image(11, 17, 3), "tiny"),
        "portable_tiny_rgba_shards": (smooth_image(40, 30, 4), "tiny"),
        "portable_tiny_rgb_floored": (smooth_image(21, 18, 3), "tiny"),
        "portable_tiny_zero_flags_adapted": (scan_like(40, 36, np.int16, floor=-1024), "tiny"),
        "portable_shipped_rgb": (sample[:48, :80], "shipped"),
        "portable_shipped_gray16_zero_flags": (scan_like(40, 36), "shipped"),
    }


def main() -> None:
    OUT.mkdir(exist_ok=True)
    tiny = {1: make_model(1), 3: make_model(3)}
    manifest = {}
    for name, (pixels, which) in cases().items():
        img = as_image(pixels)
        if name == "tiny_metadata":
            img = Image(img.pixels, img.bits, 1, b"\x00" * 128 + b"DICM" + b"conformance")
        models = tiny if which == "tiny" else ({1: load_catalog_model(PINNED[name])} if name in PINNED else None)
        if name in PATCH:
            models = {c: m.with_patch(PATCH[name]) for c, m in models.items()}
        portable = name.startswith("portable_")
        data = codec.encode(img, models, threads=1, effort=EFFORT.get(name, 0), floored=name in FLOORED,
                            portable=portable)
        (OUT / f"{name}.hpac").write_bytes(data)
        header, _ = container.read(data)
        manifest[name] = {
            "models": which,
            "shape": list(img.pixels.shape),
            "dtype": img.pixels.dtype.name,
            "pixel_sha256": hashlib.sha256(np.ascontiguousarray(img.pixels).tobytes()).hexdigest(),
            "file_sha256": hashlib.sha256(data).hexdigest(),
            "format_version": int.from_bytes(data[8:10], "little"),
            "effort": EFFORT.get(name, 0),
            "floored": name in FLOORED,
            "weights": [f"{p.model_name}:{p.weights_id}" for p in header.planes],
            # float32 files decode where the writer's fingerprint matches; portable ones everywhere
            "arithmetic": "portable" if portable else fingerprint(),
        }
        print(f"{name}: {len(data)} bytes")
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
