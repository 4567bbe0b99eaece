"""``hpac bench``: hpac beside the classical lossless codecs on the same images, in one run.

Every codec's output is decoded and compared bit-exactly; a mismatch is reported as a
failure, never silently counted. bpsp = 8 * bytes / (H * W * C). Times are wall-clock
seconds of one run on this machine; hpac and JPEG XL get the same thread count. Each codec
first codes a small crop of the first image, untimed in the figures: a process's one-time
costs (hpac: loading numba's compiled kernels, about a second) would otherwise land on
whichever image comes first. Those first calls are reported apart (``warmup_s``).
"""
from __future__ import annotations

import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from .. import container, fileformat
from ..adapters.effort import DEFAULT_EFFORT, EFFORTS
from ..errors import HpacError
from ..io.readers import IMAGE_SUFFIXES, read_image

CodecFn = Callable[[np.ndarray, int], tuple[bytes, Callable[[bytes], np.ndarray]]]


def _plain(arr: np.ndarray) -> np.ndarray:
    """(H, W, 1) -> (H, W): the classical encoders expect 2-D gray images."""
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def _png(arr: np.ndarray, threads: int):
    import imagecodecs

    try:
        import oxipng
    except ImportError:
        raise HpacError("the png baseline (oxipng -o 6) needs pyoxipng: pip install 'hpac[bench]'") from None

    raw = imagecodecs.png_encode(_plain(arr), level=1)
    data = oxipng.optimize_from_memory(raw, level=6)

    def dec(d):
        out = imagecodecs.png_decode(d)
        # oxipng may store gray as a palette image, which decodes to equal R, G, B
        return out[:, :, 0] if arr.shape[2] == 1 and out.ndim == 3 else out

    return data, dec


def _webp(arr: np.ndarray, threads: int):
    import imagecodecs

    if arr.dtype != np.uint8:
        return None
    src = np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr  # WebP has no gray mode
    data = imagecodecs.webp_encode(src, level=100, lossless=True, method=6)

    def dec(d):
        out = imagecodecs.webp_decode(d)
        return out[:, :, :1] if arr.shape[2] == 1 else out

    return data, dec


def _jxl(effort: int) -> CodecFn:
    def run(arr: np.ndarray, threads: int):
        import imagecodecs

        data = imagecodecs.jpegxl_encode(_plain(arr), lossless=True, effort=effort, numthreads=threads)
        return data, lambda d: imagecodecs.jpegxl_decode(d, numthreads=threads)

    return run


def _jpegls(arr: np.ndarray, threads: int):
    import imagecodecs

    if arr.shape[2] not in (1, 3):
        return None
    return imagecodecs.jpegls_encode(_plain(arr)), lambda d: imagecodecs.jpegls_decode(d)


def _j2k(arr: np.ndarray, threads: int):
    import imagecodecs

    data = imagecodecs.jpeg2k_encode(_plain(arr), level=0, reversible=True, numthreads=threads)
    return data, lambda d: imagecodecs.jpeg2k_decode(d, numthreads=threads)


def _hpac(effort: int) -> CodecFn:
    def run(arr: np.ndarray, threads: int):
        from .. import codec

        data = codec.encode(arr, threads=threads, effort=effort)
        return data, lambda d: codec.decode(d, threads=threads)

    return run


HPAC_LEVELS = {"hpac": 0, **{f"hpac_e{e}": e for e in EFFORTS if e}}  # "hpac" is effort 0
DEFAULT_CODECS = ("hpac", *([f"hpac_e{DEFAULT_EFFORT}"] if DEFAULT_EFFORT else []), "png", "webp", "jxl_e7", "jxl_e9",
                  "jpegls", "j2k")

CODECS: dict[str, CodecFn] = {
    **{name: _hpac(e) for name, e in HPAC_LEVELS.items()},
    "png": _png,
    "webp": _webp,
    "jxl_e7": _jxl(7),
    "jxl_e9": _jxl(9),
    "jpegls": _jpegls,
    "j2k": _j2k,
}


def _measure(fn: CodecFn, arr: np.ndarray, threads: int) -> dict | None:
    t0 = time.perf_counter()
    res = fn(arr, threads)
    t1 = time.perf_counter()
    if res is None:
        return None
    data, dec = res
    t2 = time.perf_counter()
    back = np.asarray(dec(data))
    t3 = time.perf_counter()
    out = {"bytes": len(data), "bpsp": 8 * len(data) / arr.size, "enc_s": t1 - t0, "dec_s": t3 - t2,
           "ok": same_image(back, arr)}
    if data[: len(fileformat.MAGIC)] == fileformat.MAGIC:
        out["classical"] = classical_share(data)
    return out


def classical_share(data: bytes) -> float:
    """Share of an .hpac file's subpixels in patches a classical codec codes (hpac.entropy.regions)."""
    header, _ = container.read(data)
    total = coded = 0
    for p in header.planes:
        chosen = p.classical(header.height, header.width)
        total += chosen.size * p.n_channels
        coded += int(chosen.sum()) * p.n_channels
    return coded / total


def same_image(back: np.ndarray, arr: np.ndarray) -> bool:
    """Does a codec's output ``back`` hold the pixels of ``arr`` (H, W, C)? Bit for bit, except
    that an alpha channel that is opaque everywhere may come back dropped: PNG and WebP store
    such an RGBA image as RGB, which means the same image."""
    if back.dtype != arr.dtype:
        return False
    if back.size == arr.size:
        return np.array_equal(back.reshape(arr.shape), arr)
    opaque = arr.shape[2] in (2, 4) and bool(np.all(arr[:, :, -1] == np.iinfo(arr.dtype).max))
    return opaque and back.size == arr[:, :, :-1].size and np.array_equal(back.reshape(arr[:, :, :-1].shape),
                                                                           arr[:, :, :-1])


WARMUP_SIDE = 64  # the crop each codec codes once before the timed runs


def _warm_up(path: Path, names: list[str], threads: int) -> dict[str, float]:
    """Seconds each codec's first encode + decode of a WARMUP_SIDE crop of ``path`` took."""
    arr = np.ascontiguousarray(read_image(path).pixels[:WARMUP_SIDE, :WARMUP_SIDE])
    out = {}
    for name in names:
        t = time.perf_counter()
        res = CODECS[name](arr, threads)
        if res is not None:
            res[1](res[0])
            out[name] = time.perf_counter() - t
    return out


def _images(dirs: list[Path], limit: int | None) -> list[Path]:
    out = []
    for d in dirs:
        files = sorted(p for p in Path(d).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        out += files[:limit] if limit else files
    return out


def run_bench(dirs: list[Path], json_path: Path | None = None, threads: int | None = None,
              codecs: list[str] | None = None, limit: int | None = None, markdown: Path | None = None,
              plot: Path | None = None) -> dict:
    """Run the benchmark; ``plot`` also draws the summary (:func:`plot_summary`) to that image file."""
    from ..parallel import default_threads

    threads = threads or default_threads()
    names = codecs or list(DEFAULT_CODECS)
    unknown = set(names) - set(CODECS)
    if unknown:
        raise HpacError(f"unknown codec(s) {', '.join(sorted(unknown))}; choose from {', '.join(CODECS)}")
    if plot:
        _figure_class()  # a missing matplotlib fails now, not after hours of benchmarking
    images = _images(dirs, limit)
    warmup = _warm_up(images[0], names, threads) if images else {}
    if warmup:
        print("first calls, not in the figures (s): " + ", ".join(f"{n} {t:.2f}" for n, t in warmup.items()))
    rows = []
    for path in images:
        img = read_image(path)
        arr = img.pixels
        h, w, c = arr.shape
        # absolute: `hpac bench .` names its rows after the current folder, not ""
        row = {"image": str(path), "domain": path.absolute().parent.name, "shape": [h, w, c], "bits": img.bits,
               "codecs": {}}
        for name in names:
            row["codecs"][name] = _measure(CODECS[name], arr, threads)
        rows.append(row)
        cells = "  ".join(f"{n}={r['bpsp']:.3f}{'' if r['ok'] else '(FAIL)'}"
                          + (f"[classical {r['classical']:.0%}]" if r.get("classical") else "")
                          for n, r in row["codecs"].items() if r)
        print(f"{path.name:36} {w}x{h}x{c} {img.bits:2}b  {cells}", flush=True)
    summary = summarise(rows, names)
    print()
    print(format_markdown(summary, names, threads))
    result = {"threads": threads, "machine": platform.machine(), "processor": platform.processor(),
              "python": sys.version.split()[0], "warmup_s": warmup, "images": rows, "summary": summary}
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1))
    if markdown:
        Path(markdown).write_text(format_markdown(summary, names, threads) + "\n")
    if plot:
        plot_summary(summary, plot, names)
    return result


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise HpacError("plotting needs matplotlib: pip install 'hpac[plot]'") from None
    return Figure


def plot_summary(summary: dict, path: Path, names: list[str] | None = None) -> None:
    """Draw mean bpsp as grouped bars (x: domain, one bar per codec) to an image file.

    Args:
        summary: :func:`summarise` output, {domain: {"bpsp": {codec: bpsp}, "n": images, ...}}.
        path: output file; its suffix picks the format (.png, .svg, .pdf).
        names: codecs in bar order (default: every codec in the summary, in first-seen order).
    """
    names = names or list(dict.fromkeys(n for e in summary.values() for n in e["bpsp"]))
    domains = list(summary)
    # a bare Figure renders with Agg and leaves pyplot and the caller's backend alone
    fig = _figure_class()(figsize=(max(6.0, 0.3 * len(domains) * (len(names) + 1)), 4.0), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs = np.arange(len(domains)) + (i - (len(names) - 1) / 2) * width
        ys = [summary[d]["bpsp"].get(name, np.nan) for d in domains]  # NaN: codec not run there (no bar)
        bars = ax.bar(xs, ys, width, label=name)
        ax.bar_label(bars, labels=[f"{y:.2f}" if y == y else "" for y in ys], fontsize=6, rotation=90, padding=2)
    ax.set_xticks(range(len(domains)),
                  [f"{d}\nn={summary[d]['n']}" if "n" in summary[d] else d for d in domains])
    ax.set_ylabel("bits per subpixel (lower is better)")
    ax.margins(y=0.15)
    ax.legend(ncols=min(4, len(names)), fontsize="small")
    fig.savefig(path, dpi=150)


def summarise(rows: list[dict], names: list[str]) -> dict:
    """Per (domain, bit class): mean bpsp per codec, hpac and JXL s/MP, failures."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[f"{r['domain']} ({'8' if r['bits'] == 8 else '16'}-bit)"].append(r)
    out = {}
    for key, rs in sorted(groups.items()):
        entry = {"n": len(rs), "bpsp": {}, "enc_s_per_mp": {}, "dec_s_per_mp": {}, "failures": {}}
        for n in names:
            got = [(r, r["codecs"][n]) for r in rs if r["codecs"].get(n)]
            if len(got) != len(rs):
                continue
            mp = sum(r["shape"][0] * r["shape"][1] for r, _ in got) / 1e6
            entry["bpsp"][n] = float(np.mean([m["bpsp"] for _, m in got]))
            entry["enc_s_per_mp"][n] = sum(m["enc_s"] for _, m in got) / mp
            entry["dec_s_per_mp"][n] = sum(m["dec_s"] for _, m in got) / mp
            entry["failures"][n] = sum(not m["ok"] for _, m in got)
            if all("classical" in m for _, m in got):
                entry.setdefault("classical", {})[n] = float(np.mean([m["classical"] for _, m in got]))
        b = entry["bpsp"]
        for n in HPAC_LEVELS:
            if n in b and "jxl_e9" in b:
                entry[f"{n}_over_jxl_e9"] = b[n] / b["jxl_e9"]
            if n != "hpac" and n in b and "hpac" in b:
                entry[f"{n}_over_hpac"] = b[n] / b["hpac"]
                entry[f"{n}_enc_over_hpac"] = entry["enc_s_per_mp"][n] / entry["enc_s_per_mp"]["hpac"]
        out[key] = entry
    return out


def format_markdown(summary: dict, names: list[str], threads: int) -> str:
    """The summary as Markdown: bpsp per codec, then hpac's ratios and speeds per effort level."""
    levels = [n for n in HPAC_LEVELS if n in names]
    head = ["domain", "n", *names, *[f"{n} / jxl_e9" for n in levels]]
    head += [f"{n} {k} s/MP" for n in levels for k in ("enc", "dec")] + ["jxl_e9 enc s/MP"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, e in summary.items():
        cells = [key, str(e["n"])]
        cells += [f"{e['bpsp'][n]:.3f}" + (" (FAIL)" if e["failures"].get(n) else "") if n in e["bpsp"] else "n/a"
                  for n in names]
        cells += [f"{e[f'{n}_over_jxl_e9']:.3f}" if f"{n}_over_jxl_e9" in e else "-" for n in levels]
        for n in levels:
            for k in ("enc_s_per_mp", "dec_s_per_mp"):
                cells.append(f"{e[k][n]:.2f}" if n in e[k] else "-")
        cells.append(f"{e['enc_s_per_mp']['jxl_e9']:.2f}" if "jxl_e9" in e["enc_s_per_mp"] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\n(bits per subpixel, mean over images; hpac and JPEG XL ran with {threads} thread(s); "
                 f"hpac = effort 0, hpac_eN = effort N)")
    for key, e in summary.items():
        for n, share in e.get("classical", {}).items():
            if share:
                lines.append(f"{key}: {n} coded {share:.0%} of the subpixels (mean over images) in patches given to "
                             "a classical codec (hpac.entropy.regions)")
        for n in levels:
            if f"{n}_over_hpac" in e:
                lines.append(f"{key}: {n} is {e[f'{n}_over_hpac']:.3f}x the size of effort 0 at "
                             f"{e[f'{n}_enc_over_hpac']:.2f}x its encode time")
    return "\n".join(lines)
