#!/usr/bin/env python3
"""Bit widths of the integer network against code length: the table in docs/integer.md.

    .venv/bin/python scripts/quant_sweep.py --data ../shared/data/train [--files 12] [--crop 128]

For each QuantSpec variant, hpac-natural's integer network (grids calibrated on half of the
files' crops) codes crops of the other half; the code length is the mixture's exact NLL of the
integer parameters (hpac.nn.quantize.mixture + hpac.nn.mixture.mixture_bits), against the float
network's on the same crops. Training images only: never point it at dev/.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hpac.errors import ModelMismatchError
from hpac.nn import integer, quantize
from hpac.nn.csi import plane_params
from hpac.zoo.catalog import load_catalog_model
from hpac.nn.mixture import mixture_bits, nll_bits, normalise

VARIANTS = {
    "default": {},
    "act 10": {"act_bits": 10},
    "act 8": {"act_bits": 8},
    "tables 14": {"lut_bits": 14},
    "residual 2^-12": {"res_frac": 12},
    "weights 6 (blocks)": {"wbits": 6, "wbits_dw": 6},
    "weights 10 (blocks)": {"wbits": 10, "wbits_dw": 10},
    "edge weights 8": {"wbits_edge": 8},
    "tables 10": {"lut_bits": 10},
    "residual 2^-8": {"res_frac": 8},
}


def crops(files: list[Path], crop: int, per_file: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    out = []
    for f in files:
        a = np.asarray(Image.open(f).convert("RGB"))
        if min(a.shape[:2]) < crop:
            continue
        for _ in range(per_file):
            r, c = rng.integers(0, a.shape[0] - crop + 1), rng.integers(0, a.shape[1] - crop + 1)
            out.append(a[r : r + crop, c : c + crop].astype(np.int64))
    return torch.from_numpy(np.stack(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--crop", type=int, default=128)
    args = ap.parse_args()
    files = sorted(args.data.glob("*.png"))[: 2 * args.files]
    cal, test = crops(files[0::2], 64, 4, 0), crops(files[1::2], args.crop, 1, 1)
    model = load_catalog_model("hpac-natural").with_patch(args.crop)
    net = model.net
    with torch.no_grad():
        fb = float(nll_bits(net(normalise(test, 8).permute(0, 3, 1, 2)), test, 8, 3, 5).mean())
    batches = [normalise(cal[i : i + 16], 8).permute(0, 3, 1, 2) for i in range(0, len(cal), 16)]
    print(f"float network: {fb:.4f} bpsp on {len(test)} crops {args.crop}x{args.crop}")
    print("| variant | spec | bpsp | cost vs float | plane pass s |")
    print("|---|---|---|---|---|")
    for name, kw in VARIANTS.items():
        spec = dataclasses.replace(integer.QuantSpec(), **kw)
        ranges = quantize.calibrate(net, batches, spec)
        try:
            inet = integer.load(integer.export(quantize.float_state(net), integer.grids(ranges, net.cfg, spec), spec),
                                net.cfg, spec, 8)
        except ModelMismatchError as exc:  # e.g. a residual grid whose LayerNorm sums leave float64's integers
            print(f"| {name} | {kw} | not supported: {exc} | | |", flush=True)
            continue
        t = time.time()
        p = plane_params(inet, test.numpy())
        dt = time.time() - t
        ib = float(mixture_bits(quantize.mixture(p, inet), test, 8).mean())
        print(f"| {name} | {kw or 'QuantSpec()'} | {ib:.4f} | {100 * (ib / fb - 1):+.2f}% | {dt:.1f} |", flush=True)


if __name__ == "__main__":
    main()
