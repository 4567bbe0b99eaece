"""Carry training tiles to a GPU machine: lossless WebP there, .npy on arrival.

    python scripts/webp_tiles.py pack DST SRC [SRC ...]   # k-th SRC/x/y.png -> DST/<k>-<SRC name>/x/y.webp
    python scripts/webp_tiles.py unpack SRC DST           # DST/.../y.npy, read by `hpac train`

Lossless WebP is about 30% smaller than the PNG tiles (the training set fits a 64 MiB
transfer), and Pillow, which decodes it, is on the usual CUDA images where imagecodecs is
not; `hpac train` reads .npy without imagecodecs. Gray tiles are stored as RGB WebP named
``*.L.webp`` and unpacked to one channel. Packing checks every tile decodes bit-exactly.
16-bit PNGs (medical training images) are copied as they are: WebP holds 8 bits only.
The validation split does not depend on the folders' location or the format (hpac.tools.train).
"""
from __future__ import annotations

import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


WIDE_MODES = ("I;16", "I")  # 16-bit gray as Pillow opens it (older versions: "I")


def _pack_one(job: tuple[Path, Path]) -> int:
    src, out = job
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        shutil.copyfile(src, out)
        return out.stat().st_size
    with Image.open(src) as im:
        im.load()
        if im.mode not in ("L", "RGB"):
            raise SystemExit(f"{src}: mode {im.mode} is not carried (L, RGB or 16-bit gray only)")
        rgb = im.convert("RGB")
    rgb.save(out, lossless=True, quality=100, method=6, exact=True)
    with Image.open(out) as back:
        if not np.array_equal(np.asarray(back.convert("RGB")), np.asarray(rgb)):
            raise SystemExit(f"{src}: WebP round trip is not exact")
    return out.stat().st_size


def _unpack_one(job: tuple[Path, Path]) -> None:
    src, out = job
    with Image.open(src) as im:
        if src.suffix == ".png":  # 16-bit gray (mode "I" is int32)
            arr = np.asarray(im).astype(np.uint16)
        else:
            arr = np.asarray(im.convert("RGB"))
    if src.name.endswith(".L.webp"):
        arr = arr[:, :, 0]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, np.ascontiguousarray(arr))


def pack(dst: Path, sources: list[Path], workers: int) -> None:
    jobs = []
    for k, root in enumerate(sources):
        for f in sorted(root.rglob("*.png")):
            with Image.open(f) as im:
                mode = im.mode
            rel = f.relative_to(root).with_suffix("")
            name = f"{rel.name}.png" if mode in WIDE_MODES else f"{rel.name}{'.L' if mode == 'L' else ''}.webp"
            jobs.append((f, dst / f"{k}-{root.name}" / rel.parent / name))
    with ProcessPoolExecutor(workers) as ex:
        total = sum(ex.map(_pack_one, jobs))
    print(f"packed {len(jobs)} tiles, {total / 2**20:.1f} MiB -> {dst}")


def unpack(src: Path, dst: Path, workers: int) -> None:
    jobs = []
    for f in sorted([*src.rglob("*.webp"), *src.rglob("*.png")]):
        rel = f.relative_to(src)
        name = f.name[: -len(".L.webp")] if f.name.endswith(".L.webp") else f.stem
        jobs.append((f, dst / rel.parent / f"{name}.npy"))
    with ProcessPoolExecutor(workers) as ex:
        list(ex.map(_unpack_one, jobs))
    print(f"unpacked {len(jobs)} tiles -> {dst}", flush=True)


def main(argv: list[str]) -> None:
    import os

    workers = os.cpu_count() or 1
    if len(argv) >= 3 and argv[0] == "pack":
        pack(Path(argv[1]), [Path(a) for a in argv[2:]], workers)
    elif len(argv) == 3 and argv[0] == "unpack":
        unpack(Path(argv[1]), Path(argv[2]), workers)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
