#!/usr/bin/env python3
"""Integer-network code length of weights files on held-out training images (the QAT table
in docs/integer.md).

    .venv/bin/python scripts/qat_eval.py --data ../shared/data/train --arch hpac-natural \\
        src/hpac/zoo/data/hpac-natural.safetensors /work/qat/natural.safetensors [--gray]

The images are those ``hpac train`` holds out for validation (hpac.tools.train.split_train_val), cut
into P x P patches as the codec cuts them; the code length is the exact NLL of the integer
network's mixtures (hpac.nn.integer.plane_params + hpac.nn.quantize.mixture). Training images only:
never point it at dev/.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from hpac.nn import integer, quantize
from hpac.nn.csi import plane_params
from hpac.tools import train
from hpac.zoo.catalog import get_entry, load_model_file
from hpac.shards import to_patches
from hpac.nn.mixture import mixture_bits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", nargs="+", type=Path)
    ap.add_argument("--data", nargs="+", type=Path, required=True)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--gray", action="store_true")
    args = ap.parse_args()
    patch = get_entry(args.arch).config.patch
    _, held = train.split_train_val(train._load_images(args.data, args.gray))
    for path in args.weights:
        model = load_model_file(path).with_patch(patch)
        total = count = 0.0
        for _, sym, bits in held:
            inet = model.integer(bits)
            patches, valid = to_patches(sym, patch)
            patches = patches.astype(np.int64)
            for i in range(patches.shape[0]):
                p = plane_params(inet, patches[i : i + 1], valid[i : i + 1])
                b = mixture_bits(quantize.mixture(p, inet), torch.from_numpy(patches[i : i + 1]), bits)
                total += float(b.sum(-1)[torch.from_numpy(valid[i : i + 1])].sum())
                count += float(valid[i].sum()) * sym.shape[-1]
        print(f"{path}: {total / count:.4f} bpsp on {len(held)} held-out images ({model.weights_id})", flush=True)


if __name__ == "__main__":
    main()
