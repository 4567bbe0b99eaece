"""Measure AFC window sizes and real escape rates for several escape masses.

    .venv/bin/python scripts/afc_windows.py IMAGE.png [IMAGE.png ...] [--patches 32]

For the first N patches of each RGB image, with hpac-natural's integer network: mean stage-1
table width, the fraction of subpixels that fall outside their window (escapes), and the bits
those escapes cost (about rate * (bits + log2(1/rate)) per subpixel). Table width is what AFC's
time scales with; the format fixes afc.ESCAPE_MASS, this only measures the alternatives.
"""
import argparse

import numpy as np
import torch

from hpac.entropy import afc
from hpac.nn import integer
from hpac.nn.csi import plane_params
from hpac.zoo import catalog
from hpac.shards import to_patches
from hpac.io.readers import read_image

ap = argparse.ArgumentParser()
ap.add_argument("images", nargs="+")
ap.add_argument("--patches", type=int, default=32)
ap.add_argument("--masses", default="1e-4,3e-4,1e-3")
args = ap.parse_args()
torch.set_num_threads(1)
model = catalog.load_catalog_model("hpac-natural")
for path in args.images:
    img = read_image(path)
    bits = img.bits
    net = model.integer(bits)
    pt, valid = to_patches(img.pixels[:, :, :3].astype(np.int64), model.config.patch)
    pt, valid = pt[: args.patches], valid[: args.patches]
    params = plane_params(net, pt, valid).reshape(-1, net.cfg.n_params)
    sym = pt.reshape(-1, 3)
    q = integer.centred(pt, bits).reshape(-1, 3)
    units = [integer.units(net, params, c, q) for c in range(3)]
    for mass in map(float, args.masses.split(",")):
        tails = afc.tail_table(mass)
        width, escapes = 0.0, 0
        for c, (w, mu, s) in enumerate(units):
            lo, delta, wd = afc.windows(w, mu, s, bits, tails=tails)
            width += float(wd.mean()) / 3
            escapes += int(((sym[:, c] < lo) | (sym[:, c] >= lo + wd * delta)).sum())
        rate = escapes / sym.size
        cost = rate * (bits + np.log2(1 / rate)) if rate else 0.0
        print(f"{path.split('/')[-1]:28s} escape mass {mass:.0e}: mean width {width:6.1f}  "
              f"escape rate {rate:.2e}  ~{cost:.4f} bits/subpixel")
