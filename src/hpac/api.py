"""Public Python API: arrays <-> bytes, and files <-> files.

    >>> import numpy as np, hpac
    >>> img = np.zeros((5, 7, 3), np.uint8)
    >>> assert (hpac.decode(hpac.encode(img)) == img).all()
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def _models(model):
    """Normalise the ``model`` argument: None, a CodecModel, a weights path, or a list of them."""
    from .catalog import CodecModel, load_model_file

    if model is None:
        return []
    items = model if isinstance(model, (list, tuple)) else [model]
    return [m if isinstance(m, CodecModel) else load_model_file(m) for m in items]


def encode(pixels, *, model=None, threads: int | None = None, effort: int | None = None, seed: int = 0,
           progress: bool = False) -> bytes:
    """Losslessly compress an image array.

    Args:
        pixels: (H, W) or (H, W, C) array, C in 1..4, dtype uint8, uint16 or int16; or an
            :class:`hpac.imageio.Image` from ``read_image`` (keeps e.g. a DICOM header).
        model: optional model(s) replacing the catalog default for their plane size
            (a :class:`hpac.catalog.CodecModel` or a weights file path, or a list).
        threads: workers (default: all cores; forked processes on Linux, so from a program whose
            own threads run torch meanwhile pass 1); the output never depends on it.
        effort: 0 = pre-trained models only; 1..4 = per-image adapter fine-tuning (SARP-FT),
            slower and smaller (default ``hpac.adapt.DEFAULT_EFFORT``). An adapter is kept
            only where it pays for its own bits.
        seed: fine-tuning seed; the output is a function of (image, models, effort, seed).
        progress: show a progress bar while fine-tuning.
    Returns:
        the .hpac file as bytes.
    """
    from . import adapt, codec

    chosen = {m.config.channels: m for m in _models(model)}
    level = adapt.DEFAULT_EFFORT if effort is None else effort
    try:
        adapt.effort_of(level)
    except ValueError as exc:
        from .errors import HpacError

        raise HpacError(str(exc)) from None
    return codec.encode(pixels, chosen or None, threads=threads, effort=level, seed=seed, progress=progress)


def decode(data: bytes, *, model=None, threads: int | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Decompress .hpac bytes; 1-channel images come back as (H, W), others as (H, W, C).

    ``max_pixels`` (default 2^26) refuses bigger images before allocating anything."""
    from . import codec

    arr = codec.decode_image(data, _models(model), threads=threads, max_pixels=max_pixels).pixels
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def read_info(data: bytes) -> dict:
    """The metadata an .hpac file keeps, under Pillow's ``Image.info`` keys: icc_profile, exif,
    xmp, dpi and the PNG text keywords (:meth:`hpac.metadata.ImageMetadata.pillow_info`); empty
    when it keeps none (a DICOM header is read with :func:`hpac.dicom.read_dicom` on .dcm output)."""
    from . import container, metadata

    header, _ = container.read(data)
    if header.metadata_kind != metadata.KIND:
        return {}
    return metadata.from_bytes(header.metadata).pillow_info()


def atomic_write(path: str | Path, data: bytes, force: bool = False) -> None:
    """Write ``data`` to ``path`` via a temp file + rename; never leaves a partial file."""
    from .errors import HpacError

    path = Path(path)
    if path.exists() and not force:
        raise HpacError(f"{path} exists (use --force to overwrite)")
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def encode_file(src: str | Path, dst: str | Path, *, force: bool = False, jpeg_pixels: bool = False,
                strip: bool = False, **kw) -> int:
    """Read an image file, write its .hpac; returns the output size in bytes. ``jpeg_pixels``:
    code a JPEG file's decoded pixels (refused by default, :data:`hpac.imageio.JPEG_REFUSED`);
    ``strip``: drop the file's metadata (colour profile, EXIF, XMP, PNG text, resolution,
    DICOM header), kept by default and written back by :func:`decode_file`."""
    from .imageio import read_image

    data = encode(read_image(src, jpeg_pixels=jpeg_pixels, metadata=not strip), **kw)
    atomic_write(dst, data, force)
    return len(data)


def decode_file(src: str | Path, dst: str | Path, *, force: bool = False, **kw) -> np.ndarray:
    """Decode an .hpac file to ``dst``, in the format its suffix names: .png, .tif, .ppm/.pgm,
    .npy or .dcm (files made from DICOM)."""
    from .errors import HpacError

    try:
        data = Path(src).read_bytes()
    except OSError as exc:
        raise HpacError(f"cannot read {src}: {exc.strerror or exc}") from None
    from . import codec

    output_format(dst)
    img = codec.decode_image(data, _models(kw.pop("model", None)), **kw)
    atomic_write(dst, image_file_bytes(img, str(dst)), force)
    arr = img.pixels
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


# Output suffix -> what is written; one table for the CLI, decode_file and batch
OUTPUT_FORMATS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PNM", ".pgm": "PNM", ".pnm": "PNM",
                  ".npy": "NPY", ".dcm": "DICOM", ".dicom": "DICOM"}


def native_suffix(metadata_kind: int, dtype: str) -> str:
    """Where a decoded image goes by default: .dcm for files made from DICOM, .npy for signed
    data (PNG has none), else .png."""
    from . import dicom

    return ".dcm" if metadata_kind == dicom.METADATA_KIND else ".npy" if dtype == "int16" else ".png"


def output_format(name: str | Path) -> str:
    """The format an output file name asks for; an unknown suffix is an error (before any
    decoding), not a PNG under another name."""
    from .errors import HpacError

    suffix = Path(name).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise HpacError(f"cannot write {suffix or 'a file without a suffix'}: name the output .png, .tif, "
                        ".ppm/.pgm, .npy or .dcm")
    return OUTPUT_FORMATS[suffix]


def image_file_bytes(img, name: str) -> bytes:
    """The bytes of a decoded :class:`hpac.imageio.Image` in the format ``name``'s suffix asks
    for (:data:`OUTPUT_FORMATS`); .dcm needs a stored DICOM header, PNG and PGM/PPM refuse
    signed data."""
    from . import dicom, metadata
    from .errors import HpacError
    from .imageio import write_npy, write_png, write_pnm, write_tiff

    fmt = output_format(name)
    meta = metadata.from_bytes(img.metadata) if img.metadata_kind == metadata.KIND else None
    if fmt == "NPY":
        return write_npy(img.pixels)
    if fmt == "DICOM":
        if img.metadata_kind != dicom.METADATA_KIND:
            raise HpacError("this file stores no DICOM header; decode to .png, .tif or .npy")
        return dicom.write_dicom(img.pixels, img.metadata)
    if fmt == "TIFF":
        tiff = write_tiff(img.pixels)
        return metadata.into_tiff(tiff, meta) if meta else tiff
    if fmt == "PNM":
        return write_pnm(img.pixels, img.bits)
    png = write_png(img.pixels)
    return metadata.into_png(png, meta) if meta else png
