"""Classical regions on photos: paired encodes with the decision on and off, and its cost.

    .venv/bin/python scripts/regions_check.py ../shared/data/dev/natural ../shared/data/dev/satellite

Per folder: the size of each file with classical regions over the file without (1.00000 where
no patch goes classical), and the time ``regions.choose`` takes as a share of the encode
time (effort 0, 2 threads). BENCHMARKS.md, session 25.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

from hpac import codec, container
from hpac.entropy import regions
from hpac.io.readers import read_image
from hpac.io.readers import IMAGE_SUFFIXES


def main(folders: list[str]) -> None:
    choose, spent = regions.choose, [0.0]

    def timed(*args, **kw):
        t = time.perf_counter()
        out = choose(*args, **kw)
        spent[0] += time.perf_counter() - t
        return out

    codec.encode(np.zeros((64, 64, 3), np.uint8), threads=2)  # load the models, compile the kernels
    for folder in folders:
        spent[0], encode_s, sizes = 0.0, 0.0, [0, 0]
        for path in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            img = read_image(path, metadata=False)
            with mock.patch.object(regions, "choose", timed):
                t = time.perf_counter()
                on = codec.encode(img, threads=2)
                encode_s += time.perf_counter() - t
            off = codec.encode(img, threads=2, classical_regions=False)
            header, _ = container.read(on)
            chosen = [int(p.classical(header.height, header.width).sum()) for p in header.planes]
            sizes[0] += len(on)
            sizes[1] += len(off)
            print(f"{path.name:36} size {len(on) / len(off):.5f}  classical patches per plane {chosen}", flush=True)
        print(f"{folder}: size {sizes[0] / sizes[1]:.5f}; decision {spent[0]:.2f} s of {encode_s:.1f} s encode "
              f"({100 * spent[0] / encode_s:.2f}%)")


if __name__ == "__main__":
    main(sys.argv[1:])
