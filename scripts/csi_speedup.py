"""Decode time with CSI vs the naive decoder (whole network at each of the 3P-2 steps).

    .venv/bin/python scripts/csi_speedup.py IMAGE [--crop HxW] [--threads N]

Both decoders are run on the same shards with the same model; each must return the image
bit-exactly (the naive path encodes with itself, since its float path differs from CSI's).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from hpac import codec
from hpac.catalog import default_model_name, load_catalog_model
from hpac.imageio import read_image


def run(img: np.ndarray, naive: bool, threads: int) -> tuple[float, float]:
    model = load_catalog_model(default_model_name(img.shape[2], 8))
    p = model.config.patch
    patches, valid = codec.to_patches(img.astype(np.int64), p)
    pps = codec.patches_per_shard(patches.shape[0], p)  # the shards the codec itself uses
    shards = [(valid[i : i + pps], patches[i : i + pps]) for i in range(0, patches.shape[0], pps)]
    t0 = time.perf_counter()
    streams = codec._run([lambda v=v, s=s: codec.code_shard(model, 8, v, sym=s, naive=naive) for v, s in shards], threads)
    t1 = time.perf_counter()
    outs = codec._run([lambda v=v, w=w: codec.code_shard(model, 8, v, stream=w, naive=naive)
                       for (v, _), w in zip(shards, streams)], threads)
    t2 = time.perf_counter()
    assert torch.equal(torch.cat(outs).to(patches.dtype), patches), "round trip failed"
    return t1 - t0, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("image")
    ap.add_argument("--crop", default=None, help="HxW crop from the top-left corner")
    ap.add_argument("--threads", type=int, default=codec.default_threads())
    a = ap.parse_args()
    img = read_image(a.image).pixels
    if a.crop:
        h, w = map(int, a.crop.split("x"))
        img = img[:h, :w]
    mp = img.shape[0] * img.shape[1] / 1e6
    _, csi_dec = run(img, False, a.threads)
    _, naive_dec = run(img, True, a.threads)
    print(f"{a.image} {img.shape[1]}x{img.shape[0]} ({a.threads} threads): CSI decode {csi_dec:.2f} s "
          f"({csi_dec / mp:.2f} s/MP), naive decode {naive_dec:.2f} s ({naive_dec / mp:.2f} s/MP), "
          f"speed-up {naive_dec / csi_dec:.1f}x")


if __name__ == "__main__":
    main()
