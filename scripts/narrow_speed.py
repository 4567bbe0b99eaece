"""How fast would a narrower hpac-natural code? The integer network's encoder pass, one thread,
for network shapes narrower than the shipped one: which architecture to train when a GPU is lent.

    .venv/bin/python scripts/narrow_speed.py IMAGE.png [--shapes 64x2 48x2 48x1 ...] [--patches 12]

Each shape's weights are hpac-natural's, sliced to its width (to_av's a and v halves apiece) and
its grids reused: the parameters they give mean nothing, the time of the pass is what this
measures (the same kernels and products whatever the weights). Prints per shape the
multiply-adds a pixel and the pass's best time over a few rounds, relative to the first shape
(the shipped one by default). The entropy coder's share of an encode (AFC tables, range coder:
about a quarter at effort 0) does not shrink with the network.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

from hpac import shards
from hpac.nn.architecture import av_halves, narrowed
from hpac.nn.csi import plane_params
from hpac.zoo.catalog import CodecModel, load_catalog_model


def sliced(base: CodecModel, dim: int, ratio: int) -> CodecModel:
    """``base`` cut to ``dim`` channels and an MLP of ``ratio`` x dim (first channels kept)."""
    cfg0 = base.config
    cfg = replace(cfg0, dim=dim, mlp_ratio=ratio)
    try:
        state = narrowed(base.state, cfg0, cfg)
    except ValueError as exc:
        raise SystemExit(f"{dim}x{ratio}: {exc}") from None
    halves = av_halves(cfg0.dim, dim)  # to_av's per-row scales, cut as its rows
    grid = {k: (v[halves] if k.endswith("to_av.s") else v) for k, v in base.grid.items()}
    return CodecModel(f"{base.name}-{dim}x{ratio}", cfg, state, "sliced", {}, None, grid, base.spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image")
    ap.add_argument("--shapes", nargs="+", default=["64x2", "56x2", "48x2", "40x2", "64x1", "48x1"],
                    help="DIMxMLP_RATIO, the first the reference")
    ap.add_argument("--patches", type=int, default=12, help="128 x 128 patches of the image to time")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    base = load_catalog_model("hpac-natural")
    img = np.asarray(Image.open(args.image).convert("RGB"))
    pat, valid = shards.to_patches(img, base.config.patch)
    sym, valid = pat[: args.patches].astype(np.int64), valid[: args.patches]
    models = {s: sliced(base, *map(int, s.split("x"))) for s in args.shapes}
    nets = {s: m.integer(8) for s, m in models.items()}
    outs = {s: np.empty(sym.shape[:3] + (n.cfg.n_params,), n.params_dtype) for s, n in nets.items()}
    best = {s: float("inf") for s in args.shapes}
    with threadpool_limits(1):
        for s in args.shapes:  # compile and warm
            plane_params(nets[s], sym[:1], valid[:1], out=outs[s][:1])
        for _ in range(args.rounds):  # shapes in turn, so the machine's drift touches each alike
            for s in args.shapes:
                t = time.perf_counter()
                plane_params(nets[s], sym, valid, out=outs[s])
                best[s] = min(best[s], time.perf_counter() - t)
    ref = best[args.shapes[0]]
    print(f"{sym.shape[0]} patches of {args.image}, one thread, best of {args.rounds}")
    for s in args.shapes:
        print(f"{s:>6}: {models[s].config.macs_per_pixel():>7} MACs a pixel  {best[s]:.3f} s  {best[s] / ref:.2f}x")


if __name__ == "__main__":
    main()
