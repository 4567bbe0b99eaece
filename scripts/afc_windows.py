"""Measure AFC window sizes and real escape rates for several ESCAPE_MASS values.

    .venv/bin/python scripts/afc_windows.py IMAGE.png [IMAGE.png ...] [--patches 32]

For the first N 64x64 patches of each RGB image: mean stage-1 table width, the fraction of
subpixels that fall outside their window (escapes), and the bits those escapes cost
(about rate * (bits + log2(1/rate)) per subpixel). Table width is what AFC's time scales with.
"""
import argparse

import numpy as np
import torch

from hpac import afc, catalog
from hpac.codec import to_patches
from hpac.distribution import conditioned_means, normalise, split_params
from hpac.imageio import read_image

ap = argparse.ArgumentParser()
ap.add_argument("images", nargs="+")
ap.add_argument("--patches", type=int, default=32)
ap.add_argument("--masses", default="1e-4,3e-4,1e-3")
args = ap.parse_args()
torch.set_num_threads(1)
model = catalog.load_catalog_model("hpac-natural")
net, cfg = model.net.eval(), model.config
for path in args.images:
    img = read_image(path)
    bits, half = img.bits, ((1 << img.bits) - 1) / 2
    pt, _ = to_patches(img.pixels[:, :, :3].astype(np.int64), cfg.patch)
    pt = pt[: args.patches]
    with torch.no_grad():
        raw = net(normalise(pt, bits).permute(0, 3, 1, 2)).reshape(-1, net.head.out_features)
    mix = split_params(raw, 3, cfg.mixtures)
    sym = pt.reshape(-1, 3)
    xn = normalise(sym, bits)
    for mass in map(float, args.masses.split(",")):
        afc.ESCAPE_MASS = mass
        width, escapes = 0.0, 0
        for c in range(3):
            w = torch.softmax(mix.logits[:, c], -1)
            mu = (conditioned_means(mix, xn, c) + 1) * half
            s = torch.exp(mix.log_scales[:, c]) * half
            lo, delta, wd = afc.plan_windows(w, mu, s, bits)
            width += float(wd.float().mean()) / 3
            escapes += int(((sym[:, c] < lo) | (sym[:, c] >= lo + wd * delta)).sum())
        rate = escapes / sym.numel()
        cost = rate * (bits + np.log2(1 / rate)) if rate else 0.0
        print(f"{path.split('/')[-1]:28s} ESCAPE_MASS {mass:.0e}: mean width {width:6.1f}  "
              f"escape rate {rate:.2e}  ~{cost:.4f} bits/subpixel")
