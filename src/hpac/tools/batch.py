"""Batch mode: ``hpac encode -r DIR`` / ``hpac decode -r DIR`` over whole folder trees.

The tree under DIR is mirrored under the output folder (a.png -> a.hpac; a.hpac -> a.png,
.npy for signed data, .dcm for files made from DICOM). An output that already exists and
verifies against its source (the pixel sha256 in the .hpac header) is skipped, so an
interrupted batch resumes where it stopped. A file that fails is reported and the batch goes on.
"""
from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .. import api, container
from ..errors import HpacError
from ..io.readers import IMAGE_SUFFIXES, read_image
from ..io import writers

ENCODE_SUFFIXES = IMAGE_SUFFIXES | {".dcm", ".dicom"}


@dataclass(frozen=True)
class Result:
    """One file's outcome; sizes in bytes, ``subpixels`` = H * W * C (0 when unknown)."""

    src: str
    status: str  # "done", "skipped" or "failed"
    bytes_in: int = 0
    bytes_out: int = 0
    subpixels: int = 0
    hpac_bytes: int = 0  # size of the .hpac side, for bpsp
    error: str = ""


def plan(mode: str, root: Path, out_dir: Path) -> list[tuple[Path, Path]]:
    """(source, output) pairs; decode outputs have no suffix yet (it depends on the header)."""
    suffixes = ENCODE_SUFFIXES if mode == "encode" else {".hpac"}
    skip = out_dir.resolve() if out_dir.resolve() != root.resolve() else None  # an output folder inside DIR
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                   and skip not in p.resolve().parents)
    pairs = []
    for src in files:
        dst = out_dir / src.relative_to(root)
        pairs.append((src, dst.with_suffix(".hpac") if mode == "encode" else dst.with_suffix("")))
    return pairs


@lru_cache(maxsize=4)
def _models(paths: tuple[str, ...]) -> list:
    """Weights files loaded once per worker process."""
    from ..zoo.catalog import load_model_file

    return [load_model_file(p) for p in paths]


def encode_one(src: Path, dst: Path, *, effort: int | None = None, threads: int | None = None, seed: int = 0,
               model: tuple[str, ...] = (), force: bool = False, verify: bool = False, strip: bool = False) -> Result:
    """Encode one image file to ``dst`` unless ``dst`` already holds its pixels (and metadata;
    ``strip``: none)."""
    try:
        img = read_image(src, metadata=not strip)
        bytes_in = src.stat().st_size
        if dst.exists() and not force:
            data = dst.read_bytes()
            try:
                header, _ = container.read(data)
                done = header.pixel_sha256 == container.pixel_digest(img.pixels) and header.metadata == img.metadata
            except HpacError:
                done = False
            if not done:
                raise HpacError(f"{dst} exists and does not match its source (use --force to overwrite)")
            return Result(str(src), "skipped", bytes_in, len(data), img.pixels.size, len(data))
        models = _models(model) or None
        data = api.encode(img, model=models, threads=threads, effort=effort, seed=seed)
        if verify and not np.array_equal(api.decode(data, model=models, threads=threads).reshape(img.pixels.shape),
                                         img.pixels):
            raise HpacError("verification failed: decoded pixels differ (output not written)")
        dst.parent.mkdir(parents=True, exist_ok=True)
        writers.atomic_write(dst, data, force=True)
        return Result(str(src), "done", bytes_in, len(data), img.pixels.size, len(data))
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop an archive
        return Result(str(src), "failed", error=_message(exc))


def decode_one(src: Path, dst_stem: Path, *, threads: int | None = None, max_pixels: int | None = None,
               model: tuple[str, ...] = (), force: bool = False) -> Result:
    """Decode one .hpac file to ``dst_stem`` + .png / .npy / .dcm unless that already holds its pixels."""
    from .. import codec

    try:
        data = src.read_bytes()
        header, _ = container.read(data)
        dst = dst_stem.with_name(dst_stem.name + writers.native_suffix(header.metadata_kind, header.dtype))
        subpixels = header.height * header.width * header.channels
        if dst.exists() and not force:
            try:
                done = container.pixel_digest(read_image(dst).pixels) == header.pixel_sha256
            except HpacError:
                done = False
            if not done:
                raise HpacError(f"{dst} exists and does not match its source (use --force to overwrite)")
            return Result(str(src), "skipped", len(data), dst.stat().st_size, subpixels, len(data))
        img = codec.decode_image(data, list(_models(model)), threads=threads, max_pixels=max_pixels)
        out = writers.image_file_bytes(img, dst.name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        writers.atomic_write(dst, out, force=True)
        return Result(str(src), "done", len(data), len(out), subpixels, len(data))
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop an archive
        return Result(str(src), "failed", error=_message(exc))


def _message(exc: Exception) -> str:
    if isinstance(exc, HpacError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return f"{type(exc).__name__}: {exc}"  # a bug, but reported per file like the rest


def run_batch(mode: str, root: Path, out_dir: Path | None = None, *, jobs: int = 1, threads: int | None = None,
              progress: bool = True, **kw) -> list[Result]:
    """Encode or decode every file under ``root`` into ``out_dir`` (default: beside the inputs).

    Args:
        mode: "encode" or "decode".
        jobs: worker processes, each coding one file at a time.
        threads: hpac threads per job (default: the cores divided among the jobs).
        kw: passed to :func:`encode_one` / :func:`decode_one` (effort, seed, model, force, ...).
    Returns:
        one :class:`Result` per file, in path order.
    """
    from tqdm import tqdm

    from ..parallel import default_threads

    root, out_dir = Path(root), Path(out_dir or root)
    if not root.is_dir():
        raise HpacError(f"{root} is not a folder")
    pairs = plan(mode, root, out_dir)
    if not pairs:
        raise HpacError(f"no {'image' if mode == 'encode' else '.hpac'} files under {root}")
    jobs = max(1, min(jobs, len(pairs)))
    kw["threads"] = threads or max(1, default_threads() // jobs)
    fn = encode_one if mode == "encode" else decode_one
    bar = tqdm(total=len(pairs), desc=mode, unit="file", file=sys.stderr, disable=not progress)
    results, todo, first = [], [], {}

    def record(res: Result) -> None:
        results.append(res)
        if res.status == "failed":
            bar.write(f"hpac: {res.src}: {res.error}", file=sys.stderr)
        bar.update()

    with bar:
        for src, dst in pairs:  # a.png and a.tif would both become a.hpac
            if dst in first:
                record(Result(str(src), "failed", error=f"{first[dst]} has the same output name"))
            else:
                first[dst] = src
                todo.append((src, dst))
        if jobs == 1:
            for src, dst in todo:
                record(fn(src, dst, **kw))
        else:
            # spawned, not forked: the parent holds threads (tqdm's monitor, torch's pool)
            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(fn, src, dst, **kw): src for src, dst in todo}
                for fut in as_completed(futures):
                    try:
                        record(fut.result())
                    except Exception as exc:  # noqa: BLE001 - a worker died (e.g. killed for memory)
                        record(Result(str(futures[fut]), "failed", error=_message(exc)))
    return sorted(results, key=lambda r: r.src)


def format_summary(results: list[Result]) -> str:
    """One-row table: files, done, skipped, failed, bytes in / out, bpsp of the .hpac side."""
    ok = [r for r in results if r.status != "failed"]
    count = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    sub = sum(r.subpixels for r in ok)
    bpsp = f"{8 * sum(r.hpac_bytes for r in ok) / sub:.4f}" if sub else "-"
    head = ("files", "done", "skipped", "failed", "bytes in", "bytes out", "bpsp")
    row = (len(results), count["done"], count["skipped"], count["failed"], sum(r.bytes_in for r in ok),
           sum(r.bytes_out for r in ok), bpsp)
    widths = [max(len(h), len(str(v))) for h, v in zip(head, row)]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(cells, widths)) for cells in (head, row))

