"""Public Python API: arrays <-> bytes, and files <-> files.

    >>> import numpy as np, hpac
    >>> img = np.zeros((5, 7, 3), np.uint8)
    >>> assert (hpac.decode(hpac.encode(img)) == img).all()
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# the codec (numba) loads on first use, torch only for effort >= 1: ``import hpac`` and ``hpac --help`` stay quick


def as_models(model) -> list:
    """The ``model`` argument of encode/decode (None, a :class:`hpac.zoo.catalog.CodecModel`, a
    weights file path, or a list of them) as a list of CodecModels."""
    from .zoo.catalog import CodecModel, load_model_file

    if model is None:
        return []
    items = model if isinstance(model, (list, tuple)) else [model]
    return [m if isinstance(m, CodecModel) else load_model_file(m) for m in items]


def encode(pixels, *, model=None, threads: int | None = None, effort: int | None = None, seed: int = 0,
           progress: bool = False) -> bytes:
    """Losslessly compress an image array.

    Args:
        pixels: (H, W) or (H, W, C) array, C in 1..4, dtype uint8, uint16 or int16; or an
            :class:`hpac.io.image.Image` from ``read_image`` (keeps e.g. a DICOM header).
        model: optional model(s) replacing the catalog default for their plane size
            (a :class:`hpac.zoo.catalog.CodecModel` or a weights file path, or a list).
        threads: workers (default: all cores; forked processes on Linux, so from a program whose
            own threads run torch meanwhile pass 1); the output never depends on it.
        effort: 0 = pre-trained models only; 1..4 = per-image adapter fine-tuning (SARP-FT),
            slower and smaller (default ``hpac.adapters.effort.DEFAULT_EFFORT``). An adapter is kept
            only where it pays for its own bits.
        seed: fine-tuning seed; the output is a function of (image, models, effort, seed).
        progress: show a progress bar while fine-tuning.
    Returns:
        the .hpac file as bytes.
    """
    from . import codec
    from .adapters.effort import DEFAULT_EFFORT, effort_of
    from .errors import HpacError

    chosen = {m.config.channels: m for m in as_models(model)}
    level = DEFAULT_EFFORT if effort is None else effort
    try:
        effort_of(level)
    except ValueError as exc:
        raise HpacError(str(exc)) from None
    return codec.encode(pixels, chosen or None, threads=threads, effort=level, seed=seed, progress=progress)


def decode(data: bytes, *, model=None, threads: int | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Decompress .hpac bytes; 1-channel images come back as (H, W), others as (H, W, C).

    ``max_pixels`` (default 2^26) refuses bigger images before allocating anything."""
    from . import codec

    arr = codec.decode_image(data, as_models(model), threads=threads, max_pixels=max_pixels).pixels
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def read_info(data: bytes) -> dict:
    """The metadata an .hpac file keeps, under Pillow's ``Image.info`` keys: icc_profile, exif,
    xmp, dpi and the PNG text keywords (:meth:`hpac.io.metadata.ImageMetadata.pillow_info`); empty
    when it keeps none (a DICOM header is read with :func:`hpac.io.dicom.read_dicom` on .dcm output)."""
    from . import container, fileformat
    from .io import metadata

    header, _ = container.read(data)
    if header.metadata_kind != fileformat.METADATA_IMAGE:
        return {}
    return metadata.from_bytes(header.metadata).pillow_info()


def encode_file(src: str | Path, dst: str | Path, *, force: bool = False, jpeg_pixels: bool = False,
                strip: bool = False, **kw) -> int:
    """Read an image file, write its .hpac; returns the output size in bytes. ``jpeg_pixels``:
    code a JPEG file's decoded pixels (refused by default, :data:`hpac.io.readers.JPEG_REFUSED`);
    ``strip``: drop the file's metadata (colour profile, EXIF, XMP, PNG text, resolution,
    DICOM header), kept by default and written back by :func:`decode_file`."""
    from .io.readers import read_image
    from .io.writers import atomic_write

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
    from .io.writers import atomic_write, image_file_bytes, output_format

    output_format(dst)
    img = codec.decode_image(data, as_models(kw.pop("model", None)), **kw)
    atomic_write(dst, image_file_bytes(img, str(dst)), force)
    arr = img.pixels
    return arr[:, :, 0] if arr.shape[2] == 1 else arr
