"""Fuzz the .hpac parser and decoder: every input must decode or raise HpacError, promptly.

    .venv/bin/python tests/fuzz_decoder.py -runs=100000 -timeout=20       # atheris (coverage-guided)
    .venv/bin/python tests/fuzz_decoder.py --plain --runs 100000          # no atheris: seeded mutations

Seeds are real .hpac files (gray, RGB, RGBA, 16-bit, signed, with a DICOM-like metadata
section) made with tiny fixed-seed models. The first byte of each input picks a mode: odd
means "recompute both CRCs after mutating", so that the inputs get past the CRC checks and
reach the shard table, the metadata section and the range decoder. Anything escaping other
than :class:`hpac.HpacError` is a bug (atheris reports it as a crash; --plain exits 1).
"""
from __future__ import annotations

import argparse
import signal
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from conftest import make_model, smooth_image  # noqa: E402

from hpac import codec, container, fileformat, HpacError
from hpac.io import metadata  # noqa: E402
from hpac.io.image import as_image, Image  # noqa: E402

MODELS = [make_model(1), make_model(3)]
_BY_CH = {m.config.channels: m for m in MODELS}


def seed_files() -> list[bytes]:
    imgs = [
        smooth_image(5, 7, 1), smooth_image(9, 4, 3), smooth_image(3, 3, 4), np.zeros((1, 1, 1), np.uint8),
        smooth_image(6, 5, 1, dtype=np.uint16), smooth_image(4, 6, 1, dtype=np.int16),
    ]
    out = [codec.encode(a, _BY_CH, threads=1) for a in imgs]
    img = as_image(smooth_image(4, 4, 1, dtype=np.uint16))
    out.append(codec.encode(Image(img.pixels, img.bits, 1, b"\x00" * 128 + b"DICM" + bytes(range(40))), _BY_CH, threads=1))
    out.append(codec.encode(smooth_image(24, 24, 3), _BY_CH, threads=1, effort=2))  # with an adapter section
    levels = smooth_image(48, 48, 1) // 16 * 16  # 16 grey levels: a value table
    out.append(codec.encode(levels, _BY_CH, threads=1))
    out.append(codec.encode(smooth_image(30, 30, 1, dtype=np.uint16) + 20000, _BY_CH, threads=1))  # an offset map
    out.append(codec.encode(smooth_image(9, 11, 3), _BY_CH, threads=1, floored=True))  # floored tables
    padded = smooth_image(20, 18, 1)
    padded[:, :5] = padded[:3] = 0  # a zero-flagged plane, also with floored tables and adapters
    out += [codec.encode(padded, _BY_CH, threads=1, floored=f) for f in (False, True)]
    out.append(codec.encode(padded, _BY_CH, threads=1, effort=2))
    page = np.full((64, 96, 3), 250, np.uint8)  # flat with a noisy corner: classical regions beside the model
    page[:32, :32] = smooth_image(32, 32, 3)
    page[40:44, 10:90] = 20
    out.append(codec.encode(page, {c: m.with_patch(32) for c, m in _BY_CH.items()}, threads=1))
    meta = metadata.ImageMetadata(b"\x00" * 40 + b"acsp", b"II*\x00\x08\x00\x00\x00\x00\x00",
                                  b"<x:xmpmeta/>", ((b"tEXt", b"Title\x00fuzz"),), (72, 1, 72, 1, 2))
    img = as_image(smooth_image(5, 5, 3))
    out.append(codec.encode(Image(img.pixels, img.bits, fileformat.METADATA_IMAGE, meta.to_bytes()), _BY_CH, threads=1))
    return out


def fix_crcs(buf: bytes) -> bytes:
    """Recompute payload and header CRCs of a (mutated) file where its layout allows."""
    start = len(fileformat.MAGIC) + 6
    if len(buf) < start:
        return buf
    (body_len,) = struct.unpack_from("<I", buf, len(fileformat.MAGIC) + 2)
    end = start + body_len
    crc_at = start + 12 + 32  # fixed image fields, pixel sha256, then payload_crc
    if end + 4 > len(buf) or crc_at + 4 > end:
        return buf
    out = bytearray(buf)
    out[crc_at : crc_at + 4] = struct.pack("<I", zlib.crc32(bytes(out[end + 4 :])))
    out[end : end + 4] = struct.pack("<I", zlib.crc32(bytes(out[:end])))
    return bytes(out)


def one_input(data: bytes) -> None:
    """The fuzz target: decode; only HpacError may escape."""
    if not data:
        return
    body = fix_crcs(data[1:]) if data[0] & 1 else data[1:]
    try:
        codec.decode(body, MODELS, threads=1)
    except HpacError:
        pass


def mutate(seed: bytes, rng: np.random.Generator) -> bytes:
    """One random structural mutation of a seed file (plain mode)."""
    b = bytearray(seed)
    kind = rng.integers(6)
    if kind == 0:  # flip bits
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(len(b)))
            b[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # truncate
        del b[int(rng.integers(len(b))) :]
    elif kind == 2:  # insert random bytes
        i = int(rng.integers(len(b) + 1))
        b[i:i] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
    elif kind == 3:  # extreme u32 somewhere in the header
        i = int(rng.integers(max(1, min(len(b) - 4, 200))))
        b[i : i + 4] = struct.pack("<I", int(rng.choice([0, 1, 0xFFFFFFFF, 1 << 31, 1 << 20, 65536])))
    elif kind == 4:  # random payload words
        for _ in range(int(rng.integers(1, 5))):
            i = int(rng.integers(len(b)))
            b[i] = int(rng.integers(256))
    else:  # splice two halves of the file
        i, j = sorted(int(x) for x in rng.integers(0, len(b) + 1, 2))
        b = b[:i] + b[j:] + b[i:j]
    return bytes(b)


def run_plain(runs: int, seed: int, time_limit: float) -> int:
    """Seeded mutation fuzzing of the decoder without atheris; returns the number of inputs run."""
    return plain_loop(seed_files(), lambda s, rng: bytes([int(rng.integers(256))]) + mutate(s, rng), one_input,
                      runs, seed, time_limit, Path("fuzz-crash.hpac"))


def plain_loop(seeds: list[bytes], make_input, target, runs: int, seed: int, time_limit: float,
               crash: Path) -> int:
    """Run ``target`` on ``make_input(seed file, rng)`` inputs until ``runs`` or ``time_limit``
    seconds; the first input that raises or hangs 20 s is saved to ``crash``."""
    rng = np.random.default_rng(seed)

    def _hang(*_):
        raise TimeoutError("hung on a fuzz input")

    signal.signal(signal.SIGALRM, _hang)
    t0 = time.time()
    done = 0
    for done in range(1, runs + 1):
        data = make_input(seeds[int(rng.integers(len(seeds)))], rng)
        signal.alarm(20)
        try:
            target(data)
        except BaseException:
            crash.write_bytes(data)
            print(f"crash on input {done} (saved to {crash})", file=sys.stderr)
            raise
        finally:
            signal.alarm(0)
        if time.time() - t0 > time_limit:
            break
    return done


def fuzz_main(run_plain, seeds: list[bytes], target, modules: tuple | None, corpus: Path) -> None:
    """Command line of a harness: ``--plain`` mutations, or atheris with the seeds written to ``corpus``."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--plain", action="store_true")
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=float("inf"))
    args, rest = ap.parse_known_args()
    if args.plain:
        n = run_plain(args.runs, args.seed, args.max_seconds)
        print(f"fuzz: {n} inputs, no error other than HpacError")
        return
    import atheris

    corpus.mkdir(exist_ok=True)
    for i, s in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(s)
    if modules is None:  # coverage feedback on everything loaded, the libraries' Python code included
        atheris.instrument_all()
    for mod in modules or ():  # coverage feedback on these modules' functions only
        for name in dir(mod):
            fn = getattr(mod, name)
            if callable(fn) and getattr(fn, "__module__", None) == mod.__name__ and hasattr(fn, "__code__"):
                setattr(mod, name, atheris.instrument_func(fn))
    atheris.Setup([sys.argv[0], *rest, str(corpus)], target)
    atheris.Fuzz()


if __name__ == "__main__":
    fuzz_main(run_plain, [b"\x01" + s for s in seed_files()], one_input, (codec, container, sys.modules["hpac.entropy.afc"]),
              Path(__file__).parent / "fuzz-corpus")
