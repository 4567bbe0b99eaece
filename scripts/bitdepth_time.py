#!/usr/bin/env python3
"""Encode time of high-bit-depth images against 8-bit images of the same size (issue 3).

Each image is coded as it is (9-16 significant bits) and as its top 8 bits (uint8, the same
size and content), at each effort given, with the default models and threads, one after the
other in one run. Prints seconds per megapixel and the ratio high / 8-bit, per image and in
all; every file is decoded and checked.

    .venv/bin/python scripts/bitdepth_time.py ../shared/data/dev/medical --efforts 0 2
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from hpac import codec
from hpac.io.image import as_image
from hpac.io.readers import read_image


def timed_encode(img, effort: int) -> float:
    """Seconds of one encode; the file is decoded and compared."""
    t = time.perf_counter()
    data = codec.encode(img, effort=effort)
    seconds = time.perf_counter() - t
    if not np.array_equal(codec.decode(data), img.pixels):
        raise SystemExit("round trip failed")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--efforts", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in {".png", ".tif", ".tiff", ".npy", ".pgm"})
    for effort in args.efforts:
        tot = {"high": 0.0, "8bit": 0.0}
        mp_all = 0.0
        print(f"effort {effort}: image, bits, s/MP as stored, s/MP as 8-bit, ratio")
        for f in files:
            img = read_image(f)
            if img.bits <= 8:
                continue
            low = as_image((img.pixels >> (img.bits - 8)).astype(np.uint8))
            mp = img.pixels.shape[0] * img.pixels.shape[1] / 1e6
            hi_s = timed_encode(img, effort)
            lo_s = timed_encode(low, effort)
            tot["high"] += hi_s
            tot["8bit"] += lo_s
            mp_all += mp
            print(f"  {f.name:34} {img.bits:>2}  {hi_s / mp:7.2f}  {lo_s / mp:7.2f}  {hi_s / lo_s:5.2f}x", flush=True)
        print(f"  {'all':34}     {tot['high'] / mp_all:7.2f}  {tot['8bit'] / mp_all:7.2f}  "
              f"{tot['high'] / tot['8bit']:5.2f}x")


if __name__ == "__main__":
    main()
