"""Model NLL (bpsp) of RGB weights on `hpac train`'s held-out files: whole images in P x P patches.

    .venv/bin/python scripts/heldout_nll.py W.safetensors [W2 ...] [--patch 128 256]
        [--data ../shared/data/train /work/data_extra/train] [--threads 2]

The held-out files are those `hpac train` validates on (one name in ten, by hash), coded as
the codec codes them (value maps included), so a candidate model is judged here, on whole
images and at the patch size the codec uses, before anyone looks at dev. This is the
code length the model assigns (the real file is 0.1% above it, docs/training.md session 14).
About 50 s per weights file and P on 2 cores for the 34 held-out natural files.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hpac.adapters.fit import _patch_bits
from hpac.shards import to_patches
from hpac.tools.train import _load_images, split_train_val
from hpac.zoo.weights import load_net

BATCH_PIXELS = 8 * 128 * 128  # pixels per forward pass


def heldout_nll(net: torch.nn.Module, images: list, patch: int) -> list[float]:
    """bpsp of each (name, (H, W, C) symbols, bits) image, coded in ``patch`` x ``patch`` patches
    (padding enters the network as the codec gives it: zero)."""
    out = []
    with torch.no_grad():
        for _, arr, bits in images:
            pt, valid = to_patches(arr, patch)
            step = max(1, BATCH_PIXELS // (patch * patch))
            total = sum(float(_patch_bits(net, torch.from_numpy(pt[i : i + step]).long(), torch.from_numpy(valid[i : i + step]), bits).sum())
                        for i in range(0, pt.shape[0], step))
            out.append(total / arr.size)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+", type=Path)
    ap.add_argument("--patch", nargs="+", type=int, default=[128])
    ap.add_argument("--data", nargs="+", type=Path,
                    default=[Path("../shared/data/train"), Path("/work/data_extra/train")])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    _, val = split_train_val(_load_images(args.data, False))
    print(f"{len(val)} held-out files", flush=True)
    for w in args.weights:
        net = load_net(w)[0]
        for p in args.patch:
            t = time.time()
            per = heldout_nll(net, val, p)
            print(f"{w} P={p}: {sum(per) / len(per):.4f} bpsp (mean of {len(per)} files, {time.time() - t:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
