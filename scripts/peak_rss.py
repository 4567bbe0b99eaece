"""Peak memory of `hpac encode` / `hpac decode` on a large image, children included.

    .venv/bin/python scripts/peak_rss.py [--size 4000x3000] [--image SRC.png] [--gray]

Makes a WxH test image (SRC resized with Lanczos, or a smooth synthetic one), runs the CLI
encode and decode in subprocesses, and samples every 50 ms the summed RSS of the process and
all its descendants (the shard workers are forked processes; PSS, so pages they share with
the parent count once). Prints the peak and s/MP.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _tree_rss(pid: int) -> int:
    """Summed memory in bytes of pid and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        total += _pss(p)
    return total


def _pss(pid: int) -> int:
    """Proportional set size in bytes (shared copy-on-write pages of forked workers counted
    once across the tree, not once per process); VmRSS where smaps_rollup is missing."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1]) * 1024
        except OSError:
            continue
    return 0


def run(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.05)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return time.perf_counter() - t0, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="4000x3000", help="WxH")
    ap.add_argument("--image", default=None, help="source image to resize (default: synthetic)")
    ap.add_argument("--gray", action="store_true")
    ap.add_argument("--effort", default="0", help="hpac encode --effort (default 0: the pre-trained model)")
    a = ap.parse_args()
    w, h = map(int, a.size.split("x"))
    mode = "L" if a.gray else "RGB"
    if a.image:
        img = Image.open(a.image).convert(mode).resize((w, h), Image.LANCZOS)
    else:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = 128 + 60 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
        noise = np.random.default_rng(0).normal(0, 4, (h, w, 3 if mode == "RGB" else 1))
        arr = np.clip(base[..., None] + noise, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr[..., 0] if a.gray else arr)
    hpac = [sys.executable, "-m", "hpac"]
    with tempfile.TemporaryDirectory() as tmp:
        src, enc, dec = (Path(tmp) / n for n in ("in.png", "x.hpac", "out.png"))
        img.save(src)
        mp = w * h / 1e6
        t_enc, m_enc = run(hpac + ["encode", str(src), str(enc), "-q", "--effort", a.effort])
        t_dec, m_dec = run(hpac + ["decode", str(enc), str(dec), "-q"])
        same = np.array_equal(np.asarray(Image.open(src)), np.asarray(Image.open(dec)))
        print(f"{w}x{h} {mode}: encode {t_enc:.1f} s ({t_enc / mp:.2f} s/MP), peak RSS {m_enc / 2**30:.2f} GiB; "
              f"decode {t_dec:.1f} s ({t_dec / mp:.2f} s/MP), peak RSS {m_dec / 2**30:.2f} GiB; "
              f"round trip {'exact' if same else 'MISMATCH'}; {enc.stat().st_size * 8 / (w * h * len(mode)):.3f} bpsp")


if __name__ == "__main__":
    main()
