"""Encode time of two hpac trees, photo by photo in turn: steadier than whole runs on a noisy VM.

    .venv/bin/python scripts/encode_pairs.py OLD_SRC NEW_SRC [--folder DIR] [--rounds N] [--threads T]

Starts one process per tree (PYTHONPATH=OLD_SRC, NEW_SRC), each with every image of DIR read
in; then, per round and photo, both encode it (effort 0), which one first alternating. Prints
each tree's summed seconds and new/old, overall and per photo. The bytes are not compared
(the conformance and determinism tests do that).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SERVER = r"""
import sys, time
from pathlib import Path
import numpy as np
from hpac import codec
from hpac.io.readers import read_image
paths = sorted(p for p in Path(sys.argv[1]).iterdir() if p.suffix.lower() in (".png", ".tif", ".tiff", ".dcm"))
imgs = [read_image(p).pixels for p in paths]
threads = int(sys.argv[2])
codec.decode(codec.encode(np.ascontiguousarray(imgs[0][:256, :256]), threads=threads), threads=threads)
print(len(imgs), flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    codec.encode(imgs[int(line)], threads=threads)
    print(time.perf_counter() - t, flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--folder", default="../shared/data/dev/natural")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    procs = []
    for src in (args.old, args.new):
        env = dict(os.environ, PYTHONPATH=str(Path(src).resolve()))
        procs.append(subprocess.Popen([sys.executable, "-c", SERVER, args.folder, str(args.threads)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env))
    n = [int(p.stdout.readline()) for p in procs][0]
    times = np.zeros((2, n))
    for r in range(args.rounds):
        for i in range(n):
            for k in ((0, 1) if (i + r) % 2 == 0 else (1, 0)):
                procs[k].stdin.write(f"{i}\n")
                procs[k].stdin.flush()
                times[k, i] += float(procs[k].stdout.readline())
    for p in procs:
        p.stdin.close()
        p.wait()
    print(f"old {times[0].sum():.2f} s  new {times[1].sum():.2f} s  new/old {times[1].sum() / times[0].sum():.4f}")
    print("per photo new/old:", " ".join(f"{x:.3f}" for x in times[1] / times[0]))


if __name__ == "__main__":
    main()
