"""Command line: ``hpac encode|decode|verify|info|models|bench|train``.

Every deliberate failure is an :class:`HpacError`: one line on stderr, non-zero exit, no
traceback, and no partial output file (outputs are written to a temp file, then renamed).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from .. import __version__
from ..adapters.effort import DEFAULT_EFFORT, EFFORTS as EFFORT_LEVELS
from ..errors import HpacError

# the API keyword an error names (HpacError.option) -> this command's flag for it
FLAGS = {"max_pixels": "--max-pixels", "model": "--model", "force": "--force", "jpeg_pixels": "--jpeg-pixels"}


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
    p.add_argument("--patch", type=int, default=64, help="coding patch P (the catalog row's)")
    p.add_argument("--crop", type=int, default=None, help="training crop side (default: P)")
    p.add_argument("--level-shift", type=float, default=0.0, metavar="PROB",
                   help=">8-bit data: probability of moving a crop to a random level (and a batch "
                        "to a one bit wider range); lost 1.6%% on held-out head CT, off by default")
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
    p.add_argument("--stop-after", type=int, default=None, help="checkpoint and stop after N steps of this run")
    p.add_argument("--minutes", type=float, default=None,
                   help="end this run within M minutes: --steps is re-planned from the measured step rate")
    p.add_argument("--init", type=Path, default=None,
                   help="start from these weights (e.g. a shipped model) with a fresh optimizer and schedule; "
                        "they may have another P, fewer blocks (extra blocks start as the identity) or a "
                        "larger width (a narrower --dim / --mlp-ratio takes each layer's first channels)")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast for the network while training")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training loss (worth it on a GPU; on 2 CPU cores it was slower)")
    p.add_argument("--qat", action="store_true",
                   help="quantisation-aware fine-tuning of the --init weights on their integer grids "
                        "(the saved file keeps those grids)")
    p.add_argument("--no-progress", action="store_true")


def _cmd_train(args: argparse.Namespace) -> int:
    from ..errors import require_torch
    from ..nn.architecture import ModelConfig

    require_torch("hpac train")
    from .train import train, TrainOptions

    cfg = ModelConfig(channels=1 if args.gray else 3, dim=args.dim, blocks=args.blocks,
                      mlp_ratio=args.mlp_ratio, mixtures=args.mixtures, patch=args.patch)
    if args.arch:
        from ..zoo.catalog import get_entry

        cfg = get_entry(args.arch).config
    summary = train(TrainOptions(
        data=args.data, out=args.out, cfg=cfg, steps=args.steps, batch=args.batch, lr=args.lr,
        seed=args.seed, threads=args.threads, device=args.device, val_every=args.val_every,
        ckpt_minutes=args.ckpt_minutes, resume=args.resume, init=args.init, stop_after=args.stop_after, gray=args.gray,
        minutes=args.minutes, amp=args.amp, crop=args.crop, level_shift=args.level_shift, compile=args.compile,
        qat=args.qat, progress=not args.no_progress,
    ))
    val = summary["val_bpsp"]
    print(f"trained {summary['steps']} steps; validation {'-' if val is None else f'{val:.4f}'} bpsp -> {args.out}")
    return 0


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise HpacError(f"cannot read {name}: {exc.strerror or exc}") from None


def _write_output(name: str, data: bytes, force: bool) -> None:
    from ..io.writers import atomic_write

    if name == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        atomic_write(name, data, force)


def _default_out(src: str, suffix: str) -> str:
    if src == "-":
        return "-"
    return str(Path(src).with_suffix(suffix))


def _cmd_batch(args: argparse.Namespace) -> int | None:
    """``-r``: code every file under the input folder; None when not in batch mode."""
    if not args.recursive:
        if args.out_dir is not None or args.jobs != 1:
            raise HpacError("--out-dir and --jobs apply to folders (add -r)")
        return None
    from .batch import format_summary, run_batch

    if args.output:
        raise HpacError("with -r, name the output folder with --out-dir")
    if args.jobs < 1:
        raise HpacError("--jobs must be at least 1")
    kw = {"model": tuple(args.model or ()), "force": args.force}
    if args.cmd == "encode":
        kw.update(effort=args.effort, seed=args.seed, verify=args.verify, strip=args.strip)
    else:
        kw.update(max_pixels=args.max_pixels)
    results = run_batch(args.cmd, Path(args.input), args.out_dir, jobs=args.jobs, threads=args.threads,
                        progress=not args.quiet, **kw)
    if not args.quiet:
        print(format_summary(results))
    return HpacError.exit_code if any(r.status == "failed" for r in results) else 0


def _compile_notice(args: argparse.Namespace) -> None:
    """One line on stderr where numba has not yet compiled hpac's kernels into its cache: the
    first coding after an install waits about 30 s for that, once, and should say why."""
    if args.quiet:
        return
    from ..entropy import afc

    try:  # numba's own cache locator, for a kernel every encode and decode runs
        index = afc.mixture_row._cache._cache_file._index_path
    except AttributeError:  # a numba that keeps it elsewhere: no notice
        return
    if not os.path.exists(index):
        print("hpac: compiling its kernels (once after installing: about 30 s)", file=sys.stderr)


def _cmd_encode(args: argparse.Namespace) -> int:
    from .. import api
    from ..io.readers import read_image

    _compile_notice(args)
    if (code := _cmd_batch(args)) is not None:
        return code
    out = args.output or _default_out(args.input, ".hpac")
    if out != "-" and Path(out).exists() and not args.force:
        raise HpacError(f"{out} exists (use --force to overwrite)")
    img = read_image(_read_input(args.input), jpeg_pixels=args.jpeg_pixels, metadata=not args.strip)
    data = api.encode(img, model=args.model, threads=args.threads, effort=args.effort, seed=args.seed,
                      progress=not args.quiet and sys.stderr.isatty())
    if args.verify:
        import numpy as np

        back = api.decode(data, model=args.model, threads=args.threads)
        if not np.array_equal(back.reshape(img.pixels.shape), img.pixels):
            raise HpacError("verification failed: decoded pixels differ (output not written)")
    _write_output(out, data, args.force)
    if not args.quiet and out != "-":
        h, w, c = img.pixels.shape
        print(f"{args.input} -> {out}: {len(data)} bytes, {8 * len(data) / (h * w * c):.4f} bpsp", file=sys.stderr)
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
    from .. import api, codec
    from ..io import writers

    _compile_notice(args)
    if (code := _cmd_batch(args)) is not None:
        return code
    if args.output not in (None, "-"):
        writers.output_format(args.output)
    data = _read_input(args.input)
    img = codec.decode_image(data, api.as_models(args.model), threads=args.threads, max_pixels=args.max_pixels)
    native = writers.native_suffix(img.metadata_kind, img.pixels.dtype.name)
    out = args.output or _default_out(args.input, native)
    if out != "-" and Path(out).exists() and not args.force:
        raise HpacError(f"{out} exists (use --force to overwrite)")
    _write_output(out, writers.image_file_bytes(img, "stdout" + native if out == "-" else out), args.force)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    """Decode .hpac files without writing anything: each file's pixel hash is checked, and with
    --against its pixels (and DICOM header) are compared with the original image. Exit code:
    0 when all verify, else the first failure's."""
    from .. import api, codec
    from ..io.readers import read_image

    files: list[Path] = []
    for name in args.files:
        path = Path(name)
        files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".hpac") \
            if path.is_dir() else [path]
    if not files:
        raise HpacError("no .hpac files to verify")
    if args.against is not None and len(files) != 1:
        raise HpacError("--against compares one .hpac file with its original image")
    models, code = api.as_models(args.model), 0
    _compile_notice(args)
    for path in files:
        try:
            data = _read_input(str(path))
            img = codec.decode_image(data, models, threads=args.threads, max_pixels=args.max_pixels)
            if args.against is not None:
                orig = read_image(args.against)
                if (orig.pixels.shape != img.pixels.shape or not (orig.pixels == img.pixels).all()
                        or orig.metadata != img.metadata):
                    raise HpacError(f"decodes to an image other than {args.against}")
        except HpacError as exc:
            code = code or exc.exit_code
            print(f"FAILED {path}: {exc}", file=sys.stderr)
            continue
        if not args.quiet:
            h, w, c = img.pixels.shape
            print(f"ok     {path}: {w}x{h}x{c}, {8 * len(data) / (h * w * c):.4f} bpsp"
                  + (f", identical to {args.against}" if args.against is not None else ""))
    if len(files) > 1 and not args.quiet:
        print(f"{len(files)} file(s) checked: " + ("all verify" if code == 0 else "some FAILED (listed above)"))
    return code


def _cmd_info(args: argparse.Namespace) -> int:
    from .. import container, fileformat
    from ..io import metadata

    data = _read_input(args.input)
    h, _ = container.read(data)
    print(f"file:       {args.input} ({len(data)} bytes, format version {h.version})")
    print(f"image:      {h.width}x{h.height}, {h.channels} channel(s), {h.dtype}, {h.bits} significant bits")
    print(f"bpsp:       {8 * len(data) / (h.width * h.height * h.channels):.4f}")
    print(f"pixel hash: sha256 {h.pixel_sha256.hex()}")
    if h.metadata_kind == fileformat.METADATA_IMAGE:
        for line in metadata.from_bytes(h.metadata).summary():
            print(f"metadata:   {line}")
    elif h.metadata_kind:
        print(f"metadata:   {fileformat.METADATA_KINDS[h.metadata_kind]}, {len(h.metadata)} bytes")
    for i, p in enumerate(h.planes):
        chans = f"{p.first_channel}" if p.n_channels == 1 else f"{p.first_channel}-{p.first_channel + p.n_channels - 1}"
        print(f"plane {i}:    channels {chans}, model {p.model_name} (weights {p.weights_id}), patch {p.patch}, "
              f"{len(p.shard_lengths)} shard(s) of <= {p.patches_per_shard} patches, {sum(p.shard_lengths)} bytes"
              + (f", adapter {len(p.adapter)} bytes" if p.adapter else "") + _map_text(p, h.bits)
              + (", zeros flagged" if p.zero_flags else "") + _regions_text(p, h))
    if h.floored_tables:
        print("tables:     floored")
    if args.regions:
        for i, p in enumerate(h.planes):
            chosen = p.classical(h.height, h.width)
            cols = -(-h.width // p.patch)
            print(f"plane {i} patches ({p.patch} x {p.patch}; M model, C classical):")
            for r in range(0, chosen.size, cols):
                print("  " + "".join("C" if c else "M" for c in chosen[r : r + cols]))
    return 0


def _regions_text(plane, header) -> str:
    """", k of N patches <codec> (n bytes)" where a classical codec codes some of the plane's patches."""
    from .. import fileformat
    from ..entropy import regions

    if not plane.regions:
        return ""
    k = int(plane.classical(header.height, header.width).sum())
    total = fileformat.n_patches(header.height, header.width, plane.patch)
    return f", {k} of {total} patches {regions.codec_of(plane.regions)} ({len(plane.regions)} bytes)"


def _map_text(plane, bits: int) -> str:
    from ..entropy import valuemap

    m = valuemap.ValueMap.from_bytes(plane.value_map, bits)
    if m.kind == valuemap.OFFSET:
        return f", values offset by {m.base} ({m.coding_bits}-bit symbols)"
    if m.kind == valuemap.TABLE:
        return f", value table of {len(m.table)} values ({m.coding_bits}-bit symbols)"
    return ""


def _cmd_models(args: argparse.Namespace) -> int:
    from ..zoo.catalog import CATALOG, load_catalog_model

    print(f"{'name':14} {'ch':>2} {'dim':>4} {'blk':>3} {'K':>3} {'P':>4} {'params':>8} {'MACs/px':>8}  weights           description")
    for name, e in CATALOG.items():
        c = e.config
        params = sum(math.prod(s) for s in c.weight_shapes().values())
        try:
            m = load_catalog_model(name)
            wid, info = m.weights_id, m.info
        except HpacError:
            wid, info = "(not installed)", {}
        print(f"{name:14} {c.channels:>2} {c.dim:>4} {c.blocks:>3} {c.mixtures:>3} {c.patch:>4} {params:>8} "
              f"{c.macs_per_pixel():>8}  {wid:17} {e.description}")
        if args.verbose and info:
            keep = {k: info[k] for k in ("steps", "val_bpsp", "seconds", "train_files", "val_files", "data", "batch") if k in info}
            print(f"{'':14} training: {keep}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    run_bench(args.dirs, json_path=args.json, threads=args.threads, codecs=args.codecs, limit=args.limit,
              markdown=args.markdown, plot=args.plot)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpac", description="learned lossless image codec (HPAC)")
    parser.add_argument("-V", "--version", action="version", version=f"hpac {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)

    coding = argparse.ArgumentParser(add_help=False)  # every command that runs the network
    coding.add_argument("--model", action="append", default=None, metavar="WEIGHTS",
                        help="weights file to use instead of the catalog model for its plane size (repeatable)")
    coding.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    coding.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    decoding = argparse.ArgumentParser(add_help=False)
    decoding.add_argument("--max-pixels", type=int, default=None,
                          help="refuse images with more pixels (default 2^26 = 67 Mpx; guards against "
                               "decompression bombs)")
    common = argparse.ArgumentParser(add_help=False, parents=[coding])  # encode and decode
    common.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    common.add_argument("-r", "--recursive", action="store_true",
                        help="INPUT is a folder: code every file under it (skips outputs that already verify)")
    common.add_argument("--out-dir", type=Path, default=None,
                        help="with -r: mirror the folder tree here (default: beside the inputs)")
    common.add_argument("-j", "--jobs", type=int, default=1,
                        help="with -r: worker processes (each with cores / JOBS threads unless --threads)")

    p = sub.add_parser("encode", parents=[common], help="compress an image (PNG, TIFF, BMP, GIF, lossless WebP, PPM/PGM, NPY, DICOM)")
    p.add_argument("input", help="image file, - for stdin, or a folder with -r")
    p.add_argument("output", nargs="?", help="output .hpac (default: INPUT with .hpac; - for stdout)")
    p.add_argument("--verify", action="store_true", help="decode the result before writing it")
    p.add_argument("--jpeg-pixels", action="store_true",
                   help="code a JPEG input's decoded pixels (refused by default: they take several times the "
                        "JPEG's bytes; JPEG XL recompresses JPEG files losslessly)")
    p.add_argument("-e", "--effort", type=int, default=None, choices=sorted(EFFORT_LEVELS),
                   help=f"0 = pre-trained model only; higher = per-image fine-tuning (slower, smaller; "
                        f"default {DEFAULT_EFFORT})")
    p.add_argument("--seed", type=int, default=0, help="fine-tuning seed")
    p.add_argument("--strip", action="store_true",
                   help="drop what the input says besides its pixels (colour profile, EXIF, XMP, PNG text, "
                        "resolution, DICOM header); kept by default")
    p = sub.add_parser("decode", parents=[common, decoding],
                       help="decompress to .png, .tif, .ppm/.pgm, .npy or .dcm (by the output suffix)")
    p.add_argument("input", help=".hpac file, - for stdin, or a folder with -r")
    p.add_argument("output", nargs="?", help="output image (default: INPUT with .png, or .dcm / .npy for DICOM / "
                   "signed input; - for stdout)")
    p = sub.add_parser("verify", parents=[coding, decoding],
                       help="check that .hpac files decode here (pixel hash; --against an original)")
    p.add_argument("files", nargs="+", help=".hpac files, or folders searched for them")
    p.add_argument("--against", type=Path, default=None, metavar="IMAGE",
                   help="also require the pixels (and DICOM header) of this original image")
    p = sub.add_parser("info", help="print the header of an .hpac file")
    p.add_argument("input")
    p.add_argument("--regions", action="store_true",
                   help="also draw each plane's patch grid: which patches the model codes, which a classical codec")
    p = sub.add_parser("models", help="list the model catalog")
    p.add_argument("-v", "--verbose", action="store_true", help="also print training facts of the weights")
    p = sub.add_parser("bench", help="hpac beside PNG, WebP, JPEG XL, JPEG-LS, JPEG 2000 on image folders")
    p.add_argument("dirs", nargs="+", type=Path)
    p.add_argument("--json", type=Path, help="write all results as JSON")
    p.add_argument("--markdown", type=Path, help="write the summary table as Markdown")
    p.add_argument("--threads", type=int, default=None, help="hpac worker threads (default: all cores)")
    p.add_argument("--codecs", nargs="+", default=None,
                   help="codecs to run (default: hpac at effort 0 and at the default effort, png, webp, jxl_e7, "
                        "jxl_e9, jpegls, j2k; hpac_e1..hpac_e4 pick other effort levels)")
    p.add_argument("--limit", type=int, default=None, help="at most N images per folder")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                   help="also draw bpsp per codec per domain (needs matplotlib: pip install 'hpac[plot]')")
    _add_train(sub)
    return parser


COMMANDS = {"encode": _cmd_encode, "decode": _cmd_decode, "verify": _cmd_verify, "info": _cmd_info,
            "models": _cmd_models, "bench": _cmd_bench, "train": _cmd_train}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.cmd](args)
    except HpacError as exc:
        flag = f" (command line: {FLAGS[exc.option]})" if exc.option in FLAGS else ""
        print(f"hpac: error: {exc}{flag}", file=sys.stderr)
        return exc.exit_code
    except MemoryError as exc:  # (a worker's too: hpac.parallel raises it as itself)
        detail = f" ({exc})" if str(exc) else ""
        print(f"hpac: error: out of memory{detail}; fewer --threads hold fewer shards at once", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hpac: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `hpac models | head -1`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot raise again
        return 141


if __name__ == "__main__":
    sys.exit(main())
