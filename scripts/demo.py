"""Encode -> decode -> verify one image with hpac, and show PNG / JPEG XL sizes beside it."""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import hpac
from hpac.tools.bench import CODECS
from hpac.io.readers import read_image


def main(path: str) -> int:
    img = read_image(path).pixels
    h, w, c = img.shape
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "sample.hpac"
        t0 = time.perf_counter()
        n = hpac.encode_file(path, out)
        t1 = time.perf_counter()
        back = hpac.decode_file(out, Path(d) / "decoded.png")
        t2 = time.perf_counter()
    back = back.reshape(img.shape)
    ok = np.array_equal(back, img)
    print(f"{path}: {w}x{h}x{c}, {img.dtype}")
    print(f"  hpac     {8 * n / img.size:.3f} bpsp  ({n} bytes; encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s)"
          f"  round trip {'bit-exact' if ok else 'MISMATCH'}")
    for name in ("png", "jxl_e9"):
        data, dec = CODECS[name](img, 1)
        same = np.array_equal(np.asarray(dec(data)).reshape(img.shape), img)
        print(f"  {name:8} {8 * len(data) / img.size:.3f} bpsp  ({len(data)} bytes){'' if same else '  MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "samples/ihc_crop.png"))
