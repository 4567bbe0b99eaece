"""Command line: ``hpac encode|decode|info|models|bench|train``.

Every deliberate failure is an :class:`HpacError`: one line on stderr, non-zero exit, no
traceback, and no partial output file (outputs are written to a temp file, then renamed).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from . import __version__
from .errors import HpacError


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pre-train a model on image folders",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, type=Path, help="folders of training images")
    p.add_argument("--out", required=True, type=Path, help="output weights (.safetensors)")
    p.add_argument("--arch", default=None, help="start from the architecture of this catalog model")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--mlp-ratio", type=int, default=2)
    p.add_argument("--mixtures", type=int, default=5)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--gray", action="store_true", help="train a 1-channel model on image luma")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt if it exists")
    p.add_argument("--no-progress", action="store_true")


def _cmd_train(args: argparse.Namespace) -> int:
    from .model import ModelConfig
    from .train import TrainOptions, train

    cfg = ModelConfig(channels=1 if args.gray else 3, dim=args.dim, blocks=args.blocks,
                      mlp_ratio=args.mlp_ratio, mixtures=args.mixtures, patch=args.patch)
    if args.arch:
        from .catalog import get_entry

        cfg = get_entry(args.arch).config
    summary = train(TrainOptions(
        data=args.data, out=args.out, cfg=cfg, steps=args.steps, batch=args.batch, lr=args.lr,
        seed=args.seed, threads=args.threads, device=args.device, val_every=args.val_every,
        ckpt_minutes=args.ckpt_minutes, resume=args.resume, gray=args.gray, progress=not args.no_progress,
    ))
    print(f"trained {summary['steps']} steps; validation {summary['val_bpsp']:.4f} bpsp -> {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpac", description="learned lossless image codec (HPAC)")
    parser.add_argument("-V", "--version", action="version", version=f"hpac {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_train(sub)
    return parser


COMMANDS = {"train": _cmd_train}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.cmd](args)
    except HpacError as exc:
        print(f"hpac: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hpac: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
