"""Fuzz image input (PNG, TIFF, NPY, PNM, DICOM): every input must read or raise HpacError, promptly.

    .venv/bin/python tests/fuzz_input.py -runs=100000 -timeout=20 -rss_limit_mb=2048       # atheris
    .venv/bin/python tests/fuzz_input.py --plain --runs 100000                              # seeded mutations

`hpac encode` reads what users give it, and the decoders behind it (libpng, libtiff, Pillow,
pydicom and its pixel handlers) allocate what a header declares; `hpac decode` writes DICOM
around a header that a .hpac file carries. Seeds are small files of
every input format, DICOM ones from pydicom's bundled test files (native, RLE, JPEG, JPEG 2000).
Anything escaping other than :class:`hpac.HpacError` is a bug, and so is an input that makes
the reader hold far more memory than the image it returns (``-rss_limit_mb``).
"""
from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from conftest import smooth_image  # noqa: E402
from fuzz_decoder import fuzz_main, mutate, plain_loop  # noqa: E402

from hpac import HpacError
from hpac.io import dicom  # noqa: E402
from hpac.io import writers
from hpac.io import readers

DICOM_SEEDS = ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_jpeg_dcmtk.dcm",
               "SC_rgb_small_odd.dcm", "SC_rgb_small_odd_jpeg.dcm", "SC_rgb_rle_16bit.dcm")


def seed_files() -> list[bytes]:
    """Small valid inputs of every format hpac reads."""
    import imagecodecs
    from PIL import Image as PILImage
    from PIL import PngImagePlugin

    gray, rgb, deep = smooth_image(9, 7, 1)[:, :, 0], smooth_image(6, 5, 3), smooth_image(5, 8, 1, dtype=np.uint16)
    out = [writers.write_png(a) for a in (smooth_image(9, 7, 1), rgb, smooth_image(4, 4, 4), deep)]
    out += [imagecodecs.tiff_encode(a) for a in (gray, rgb, deep[:, :, 0])]
    out += [imagecodecs.tiff_encode(rgb, compression=c) for c in ("deflate", "lzw", "packbits")]
    out += [imagecodecs.tiff_encode(a, photometric="miniswhite") for a in (gray.copy(), gray > 128)]
    out.append(imagecodecs.tiff_encode(rgb[::2, ::2].copy(), subfiletype=1, appendto=imagecodecs.tiff_encode(rgb)))
    palette = PILImage.fromarray(gray % 5, "P")
    palette.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0, 7, 7, 7, 255, 255, 254])
    buf = io.BytesIO()
    palette.save(buf, "TIFF")
    out.append(buf.getvalue())
    out += [writers.write_npy(a) for a in (rgb, smooth_image(4, 6, 1, dtype=np.int16))]
    for mode, arr in (("L", gray), ("RGB", rgb)):
        buf = io.BytesIO()
        PILImage.fromarray(arr, mode).save(buf, "PPM")
        out.append(buf.getvalue())
    out.append(b"P2\n3 2\n65535\n0 1 2\n65535 4 5\n")
    out.append(b"P3 # plain, 10-bit\n2 1\n1023\n0 1 2 # c\n1023 4 5\n")
    out.append(b"P6\n2 1\n1000\n" + np.arange(6, dtype=">u2").tobytes())
    out += [imagecodecs.jpegxl_encode(a, lossless=True) for a in (gray, rgb)]  # lossless JPEG XL
    out.append(imagecodecs.webp_encode(rgb, level=100, lossless=True))
    buf = io.BytesIO()  # a PNG with metadata: profile, EXIF, text, resolution
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "fuzz")
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta/>")
    PILImage.fromarray(rgb).save(buf, "PNG", icc_profile=b"\x00" * 40 + b"acsp", exif=b"II*\x00\x08\x00\x00\x00\x00\x00",
                                 pnginfo=info, dpi=(72, 72))
    out.append(buf.getvalue())
    try:
        from pydicom.data import get_testdata_file
    except ImportError:
        return out
    for name in DICOM_SEEDS:
        path = get_testdata_file(name)
        if path:
            out.append(Path(path).read_bytes())
    return out


def one_input(data: bytes) -> None:
    """The fuzz target: read an image, and write DICOM with the bytes as its header (what a
    .hpac file's metadata section gives `hpac decode`); only HpacError may escape."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom and Pillow warn on malformed files; that is not a failure
        if dicom.is_dicom(data):
            try:
                dicom.write_dicom(np.zeros((2, 3, 1), np.uint16), data)
            except HpacError:
                pass
        try:
            img = readers.read_image(data)
        except HpacError:
            return
    assert img.pixels.ndim == 3 and 1 <= img.pixels.shape[2] <= 4, img.pixels.shape


def run_plain(runs: int, seed: int, time_limit: float) -> int:
    """Seeded mutation fuzzing of image input without atheris; returns the number of inputs run."""
    return plain_loop(seed_files(), mutate, one_input, runs, seed, time_limit, Path("fuzz-crash.img"))


if __name__ == "__main__":
    import pydicom.pixels  # noqa: F401  (loaded before instrumenting, so that its code gives coverage too)
    from PIL import PpmImagePlugin, TiffImagePlugin  # noqa: F401

    fuzz_main(run_plain, seed_files(), one_input, None, Path(__file__).parent / "fuzz-corpus-input")
