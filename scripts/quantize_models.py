#!/usr/bin/env python3
"""Calibrate the integer grids of the shipped models and store them in their weights files.

    .venv/bin/python scripts/quantize_models.py --natural ../shared/data/train \
        --medical /work/data_extra/medical [--models hpac-natural hpac-gray hpac-gray16]

Each model's float network runs over random 128x128 crops of training images (RGB for
hpac-natural, luma for hpac-gray, 9-16-bit gray from datasets/fetch_medical.py output for
hpac-gray16); every activation's range is the QuantSpec quantile of |t| (hpac.nn.quantize.calibrate),
and hpac.nn.integer.grids turns the ranges into grid steps and tables. Never point it at dev/ data.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hpac.entropy import valuemap
from hpac.nn import integer, quantize
from hpac.zoo.catalog import CATALOG, weights_path
from hpac.nn.mixture import normalise
from hpac.io.readers import read_image
from hpac.zoo.weights import load_net, save_weights

CROP, CROPS_PER_FILE, BATCH = 128, 4, 16


def crops(files: list[Path], channels: int, seed: int) -> torch.Tensor:
    """(N, channels, CROP, CROP) float crops, each normalised with its file's bit depth."""
    rng = np.random.default_rng(seed)
    out = []
    for f in files:
        if channels == 3:
            a, bits = np.asarray(Image.open(f).convert("RGB")), 8
        else:
            img = read_image(f)
            if img.pixels.shape[2] == 1:  # as the codec sees it: through the plane's value map
                vmap = valuemap.choose(img.symbols(), img.bits, gray=True)
                a, bits = vmap.forward(img.symbols()), vmap.coding_bits
            else:
                a, bits = np.asarray(Image.open(f).convert("L"))[..., None], 8
        if a.shape[0] < CROP or a.shape[1] < CROP:
            continue
        for _ in range(CROPS_PER_FILE):
            r, c = rng.integers(0, a.shape[0] - CROP + 1), rng.integers(0, a.shape[1] - CROP + 1)
            sym = torch.from_numpy(a[r : r + CROP, c : c + CROP].astype(np.int64))
            out.append(normalise(sym, bits).permute(2, 0, 1))
    return torch.stack(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--natural", type=Path, required=True, help="folder of 8-bit training photos")
    ap.add_argument("--medical", type=Path, help="folder of 9-16-bit gray training images (hpac-gray16)")
    ap.add_argument("--models", nargs="+", default=list(CATALOG))
    args = ap.parse_args()
    spec = integer.QuantSpec()
    for name in args.models:
        entry = CATALOG[name]
        if name == "hpac-gray16":
            if args.medical is None:
                print("hpac-gray16 needs --medical", file=sys.stderr)
                return 2
            files = sorted(args.medical.glob("*.png"))
        else:
            files = sorted(args.natural.glob("*.png"))
        x = crops(files, entry.config.channels, seed=0)
        path = weights_path(entry)
        net, info = load_net(path)
        info.pop("weights_id", None)
        info.pop("grid", None)
        info.pop("quant_spec", None)
        batches = [x[i : i + BATCH] for i in range(0, len(x), BATCH)]
        ranges = quantize.calibrate(net, batches, spec)
        grid = integer.grids(ranges, net.cfg, spec)
        info["integer"] = (f"grids: QuantSpec defaults, ranges the {spec.quantile} quantile of |t| over "
                           f"{len(x)} crops {CROP}x{CROP} of {len(files)} files (scripts/quantize_models.py)")
        wid = save_weights(net, path, info, grid, dataclasses.asdict(spec))
        print(f"{name}: {len(x)} crops, weights id {wid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
