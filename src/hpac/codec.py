"""Image <-> .hpac bytes: planes, the encoder's decisions, and the file.

::

    pixels (H,W,C) --planes (RGB | gray)--> value map, zero flags, classical regions,
        adapters (effort >= 1) --patches (N,P,P,c), shards--> hpac.shards --> container

A 3-channel plane uses the RGB model, every other channel a 1-channel plane. The shards of
all planes are coded concurrently (:mod:`hpac.shards`, :mod:`hpac.parallel`); memory is
bounded by the shards in flight. Decoding reads the header, resolves and adapts each plane's
model, decodes the shards and places their patches.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from . import container, fileformat, shards
from .adapters.effort import effort_of
from .entropy import regions, valuemap, zeroflags
from .errors import ChecksumError, CodingError, FormatError, ModelMismatchError, require_torch
from .io.image import Image, as_image, signed_offset
from .nn.csi import cache_bytes
from .parallel import default_threads, run_jobs
from .shards import Decode, Encode, code_shard, refused_table, shard_sizes, to_patches, valid_mask
from .zoo.catalog import CodecModel, default_model_name, load_catalog_model, resolve_model

if TYPE_CHECKING:  # the fitter is the encoder's: decoding never loads it
    from .adapters.fit import Fit

DEFAULT_MAX_DECODE_PIXELS = 1 << 26  # 67 Mpx (8192 x 8192): larger needs an explicit max_pixels
PLAIN_MARGIN = 0.005  # an adapted file this much below the effort-0 floor skips coding effort 0


class _Plane(NamedTuple):
    """A plane prepared for coding: what the encoder decided before any range coding."""

    first: int  # first channel
    nch: int  # channels
    model: CodecModel
    coded: np.ndarray  # (H, W, nch) coded symbols
    patches: np.ndarray  # (N, P, P, nch) coded symbols in the model's effort-0 patches
    valid: np.ndarray  # (N, P, P) bool
    fitted: Fit | None  # SARP-FT adapters, if any
    vmap: valuemap.ValueMap
    zero_flags: bool  # zeros flagged (hpac.entropy.zeroflags)
    classical: np.ndarray  # (N,) bool: patches WebP codes (hpac.entropy.regions); the model codes the others
    regions: bytes  # their section of the plane header (b"" where there are none)


def plane_layout(channels: int) -> list[tuple[int, int]]:
    """(first_channel, n_channels) of each plane: RGB(A) -> [RGB, A]; other counts -> gray planes."""
    if channels in (3, 4):
        return [(0, 3)] + ([(3, 1)] if channels == 4 else [])
    return [(c, 1) for c in range(channels)]


def _model_for(nch: int, bits: int, models: dict[int, CodecModel] | None) -> CodecModel:
    """The caller's model for ``nch``-channel planes, else the catalog default for ``bits``-bit symbols."""
    model = (models or {}).get(nch) or load_catalog_model(default_model_name(nch, bits))
    if model.config.channels != nch:
        raise ModelMismatchError(f"model {model.name} codes {model.config.channels}-channel planes, not {nch}")
    return model


def encode(pixels: np.ndarray | Image, models: dict[int, CodecModel] | None = None,
           threads: int | None = None, effort: int = 0, seed: int = 0, progress: bool = False,
           floored: bool = False, zero_flags: bool = True, classical_regions: bool = True) -> bytes:
    """Losslessly code an (H, W[, C]) uint8/uint16/int16 array into .hpac bytes.

    Args:
        effort: 0 codes with the pre-trained models; higher levels fine-tune per-image
            adapters first (SARP-FT, :mod:`hpac.adapters.fit`) and keep them only where they pay.
        seed: seed of the fine-tuning (the bytes are a function of image, effort and seed).
        floored: code with floored AFC tables from the start; the encoder falls back to them
            by itself when the range coder refuses a normal table.
        zero_flags: flag the zeros of gray planes where they are common (format version 6,
            :func:`hpac.entropy.zeroflags.wanted`); False writes the files of earlier releases.
        classical_regions: let lossless WebP code the patches of 8-bit planes where the model
            loses (:mod:`hpac.entropy.regions`); False: the model codes every patch.
    """
    img = pixels if isinstance(pixels, Image) else as_image(pixels)
    arr = img.pixels
    h, w, c = arr.shape
    if fileformat.too_big(h, w):
        raise FormatError(f"image {h}x{w} exceeds the format limit of {fileformat.MAX_PIXELS} pixels")
    plan = effort_of(effort)
    workers = threads or default_threads()
    sym = img.symbols()
    models = dict(models or {})
    for _, nch in plane_layout(c):  # a wrong caller-supplied model fails before any work
        if nch in models:
            _model_for(nch, img.bits, models)
    planes = []
    for first, nch in plane_layout(c):
        vmap = valuemap.choose(sym[:, :, first : first + nch], img.bits, gray=nch == 1)
        model = _model_for(nch, vmap.coding_bits, models)
        coded = vmap.forward(sym[:, :, first : first + nch])
        flagged = zero_flags and zeroflags.wanted(coded)
        patches, valid = to_patches(coded, model.config.patch)
        values = arr[:, :, first : first + nch]
        classical = np.zeros(len(patches), bool)
        if classical_regions:
            classical = regions.choose(values, model.config.patch,
                                       lambda idx, side, m=model, b=vmap.coding_bits, z=flagged, p=patches, v=valid:
                                       _model_bytes(m, b, z, p, v, idx, side))
        section = regions.encode(values, classical, model.config.patch, workers) if classical.any() else b""
        fitted = None
        if plan is not None and not classical.all():  # (no patch left for adapters to help)
            fitted = _fit(model, coded, patches, valid, vmap.coding_bits, plan, seed, workers, progress, flagged)
        planes.append(_Plane(first, nch, model, coded, patches, valid, fitted, vmap, flagged, classical, section))
    if all(p.fitted is None for p in planes):
        return _encode_planes(img, planes, workers, False, floored)[0]
    data, plane_bytes = _encode_planes(img, planes, workers, True, floored)
    # The effort-0 file would hold at least each adapted plane's effort-0 floor (hpac.adapters.fit.Fit)
    # instead of what it holds now. Only where the adapted file is not clearly smaller than
    # that is the effort-0 file coded too, and the smaller of the two kept: no file is bigger
    # than at effort 0.
    plain_estimate = len(data) + sum(p.fitted.effort0_floor / 8 - nb for p, nb in zip(planes, plane_bytes)
                                     if p.fitted is not None)
    if len(data) <= (1 - PLAIN_MARGIN) * plain_estimate:
        return data
    plain = _encode_planes(img, planes, workers, False, floored)[0]
    return data if len(data) < len(plain) else plain


def _fit(model: CodecModel, coded: np.ndarray, patches: np.ndarray, valid: np.ndarray, bits: int, plan, seed: int,
         workers: int, progress: bool, zero_flags: bool) -> Fit:
    """SARP-FT adapters for one plane (effort >= 1: the only part of encoding that runs torch)."""
    torch = require_torch("effort >= 1 (fitting SARP-FT adapters)")
    from .adapters import fit
    from .parallel import single_threaded

    h, w = coded.shape[:2]
    tile = fit.fit_tile(model.config, h, w)
    if tile == model.config.patch:
        tiles, tvalid, coding = patches, valid, None
    else:  # fit on tiles; the effort-0 estimate still comes from the coding patches
        tiles, tvalid = to_patches(coded, tile)
        coding = (torch.from_numpy(patches.astype(np.int64)), torch.from_numpy(valid))
    grid = (-(-h // tile), -(-w // tile))
    with single_threaded():
        return fit.fit(model.net, torch.from_numpy(tiles.astype(np.int64)), torch.from_numpy(tvalid), bits, grid,
                       plan, seed=seed, workers=workers, progress=progress, zero_flags=zero_flags, coding=coding)


def _model_bytes(model: CodecModel, bits: int, zero_flags: bool, patches: np.ndarray, valid: np.ndarray,
                 indices: list[int], side: int) -> list[int]:
    """Bytes of the top-left side x side pixels of each of ``patches[indices]`` coded by the
    model alone (the classical-region decision's measure, :func:`hpac.entropy.regions.choose`); in this
    process (a few small patches: forked workers would cost more); a patch the range coder
    refuses costs its raw bits."""
    out = []
    for i in indices:
        v = valid[i : i + 1].copy()
        v[:, side:] = False
        v[:, :, side:] = False
        try:
            out.append(int(code_shard(model, bits, v, Encode(patches[i : i + 1]), zero_flags=zero_flags).nbytes))
        except BaseException as exc:  # (a Rust panic is a BaseException)
            if not refused_table(exc):
                raise
            out.append(int(v.sum()) * patches.shape[-1] * bits // 8)  # the file will be coded with floored tables
    return out


def _encode_planes(img: Image, planes: list[_Plane], workers: int, use_adapters: bool,
                   floored: bool) -> tuple[bytes, list[int]]:
    """Code the prepared planes into a file; where the range coder refuses a table, again with
    floored tables (the file says so).

    Returns the file and, per plane, the bytes of its streams and adapters."""
    jobs, layout = [], []
    for first, nch, model, coded, patches, valid, fitted, vmap, flagged, classical, section in planes:
        blob = b""
        adapted = (model.adapted(fitted.merged(model.state, model.config)) if use_adapters and fitted is not None
                   else None)
        if adapted is not None and (adapted.config.patch == patches.shape[1] or not classical.any()):
            # (the regions are decided on the effort-0 patches: a plane with some keeps those)
            model, blob = adapted, fitted.blob
            if model.config.patch != patches.shape[1]:
                patches, valid = to_patches(coded, model.config.patch)
        if classical.any():  # (then the patches are still the effort-0 ones the mask is of)
            patches, valid = patches[~classical], valid[~classical]
        p = model.config.patch
        sizes = tuple(shard_sizes(model.config, valid, cache_bytes(model.config, 1)))
        parts = [(valid[at], patches[at]) for at in container.shard_slices(sizes)]
        layout.append((first, nch, model, sizes, blob, vmap.to_bytes(img.bits), flagged, section))
        jobs += [lambda v=v, s=s, m=model, b=vmap.coding_bits, z=flagged:
                 code_shard(m, b, v, Encode(s), floored=floored, zero_flags=z) for v, s in parts]
    if workers > 1 and len(jobs) > 1:
        for _, nch, model, *_rest, vbytes, flagged, _section in layout:
            shards.warm_kernels(model, valuemap.ValueMap.from_bytes(vbytes, img.bits).coding_bits, flagged)
    try:
        streams = run_jobs(jobs, workers)
    except BaseException as exc:  # (a Rust panic is a BaseException)
        if not refused_table(exc):  # a failure floored tables would not cure: as it is
            raise
        if not floored:
            return _encode_planes(img, planes, workers, use_adapters, True)
        raise CodingError(f"the range coder refused a probability table ({exc}); no file was written") from None
    it = iter(streams)
    headers = []
    for first, nch, model, sizes, blob, vbytes, flagged, section in layout:
        lens = tuple(next(it).nbytes for _ in sizes)
        headers.append(container.PlaneHeader(first, nch, model.config.patch, model.name, model.weights_id,
                                             lens, sizes, blob, vbytes, flagged, section))
    arr = img.pixels
    header = container.Header(arr.shape[0], arr.shape[1], arr.shape[2], arr.dtype.name, img.bits,
                              container.pixel_digest(arr), tuple(headers), img.metadata_kind, img.metadata,
                              floored)
    plane_bytes = [sum(ph.shard_lengths) + len(ph.adapter) + len(ph.regions) for ph in headers]
    return container.write(header, [s.astype("<u4").tobytes() for s in streams]), plane_bytes


def decode(data: bytes, models: list[CodecModel] | None = None, threads: int | None = None) -> np.ndarray:
    """Decode .hpac bytes to the original (H, W, C) array (2-D arrays come back as (H, W, 1))."""
    return decode_image(data, models, threads).pixels


def decode_image(data: bytes, models: list[CodecModel] | None = None, threads: int | None = None,
                 max_pixels: int | None = None) -> Image:
    """Decode .hpac bytes to an :class:`Image`: pixels (H, W, C), bits and stored metadata.

    Args:
        max_pixels: refuse images with more pixels than this before allocating anything
            (default DEFAULT_MAX_DECODE_PIXELS): a tiny file can legitimately describe a huge
            constant image, so size is bounded by this limit, not by the file size.
    """
    header, payload = container.read(data)
    limit = DEFAULT_MAX_DECODE_PIXELS if max_pixels is None else max_pixels
    if header.height * header.width > limit:
        raise FormatError(f"image is {header.width}x{header.height} ({header.height * header.width / 1e6:.1f} Mpx), "
                          f"above this decoder's limit of {limit / 1e6:.1f} Mpx (raise max_pixels)", option="max_pixels")
    jobs, places = [], []
    pos = 0
    for ph in header.planes:
        vmap = valuemap.ValueMap.from_bytes(ph.value_map, header.bits)
        model = resolve_model(ph.model_name, ph.weights_id, models)
        if model.config.channels != ph.n_channels:
            raise FormatError(f"plane geometry does not match model {model.name}")
        model = model.with_patch(ph.patch)  # files of any P decode (earlier releases wrote P = 64)
        need = cache_bytes(model.config, ph.patches_per_shard)
        if need > shards.MAX_SHARD_CACHE_BYTES:  # a small file must not make the decoder allocate gigabytes
            raise FormatError(f"a shard of {ph.patches_per_shard} patches of {ph.patch} x {ph.patch} would take "
                              f"{need >> 20} MiB of decoder caches with model {model.name}, above the "
                              f"{shards.MAX_SHARD_CACHE_BYTES >> 20} MiB any encoder writes")
        if ph.adapter:
            from .adapters import lora

            rank, qstep, ints = lora.decode_ints(model.config, ph.adapter)
            model = model.with_state(lora.merge(model.state, model.config, rank, qstep, ints))
        indices = ph.model_patches(header.height, header.width)
        valid = valid_mask(header.height, header.width, ph.patch)[indices]
        for ln, at in zip(ph.shard_lengths, ph.shard_slices()):
            words = np.frombuffer(payload[pos : pos + ln], dtype="<u4").astype(np.uint32)
            pos += ln
            jobs.append(lambda v=valid[at], words=words, m=model, b=vmap.coding_bits, z=ph.zero_flags:
                        code_shard(m, b, v, Decode(words), floored=header.floored_tables, zero_flags=z,
                                   cdf_entries=header.version >= fileformat.CDF_ENTRIES_SINCE))
            places.append((ph, indices[at], vmap))
        if (threads or default_threads()) > 1 and len(ph.shard_lengths) > 1:
            shards.warm_kernels(model, vmap.coding_bits, ph.zero_flags)
    try:
        results = run_jobs(jobs, threads or default_threads())
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as exc:  # constriction rejects garbage streams (a Rust panic is a BaseException)
        raise ChecksumError(f"payload is corrupt ({type(exc).__name__}: {exc})") from None
    dtype = np.dtype(header.dtype)
    offset = signed_offset(dtype, header.bits)
    pixels = np.empty((header.height, header.width, header.channels), dtype=dtype)
    for (ph, indices, vmap), shard in zip(places, results):  # values no map produces raise ChecksumError
        _place_patches(pixels, vmap.inverse(shard, header.bits) - offset, ph, indices)
    for ph in header.planes:
        if ph.regions:  # (container.read refused them in planes of more than 8 bits)
            chosen = ph.classical(header.height, header.width)
            values = regions.decode(ph.regions, chosen.size, header.height, header.width, ph.n_channels)
            _place_patches(pixels, to_patches(values, ph.patch)[0][chosen], ph, np.flatnonzero(chosen))
    if container.pixel_digest(pixels) != header.pixel_sha256:
        # every machine computes the same tables (integer arithmetic): only the bytes can be wrong
        raise ChecksumError("decoded pixels do not match the stored hash: the file is corrupt")
    return Image(pixels, header.bits, header.metadata_kind, header.metadata)


def _place_patches(pixels: np.ndarray, values: np.ndarray, ph: container.PlaneHeader, indices: np.ndarray) -> None:
    """Write (B, P, P, c) patch values into pixels (H, W, C) at the plane's patches ``indices`` (B,)."""
    h, w = pixels.shape[:2]
    p = ph.patch
    per_row = -(-w // p)
    chans = slice(ph.first_channel, ph.first_channel + ph.n_channels)
    for j, index in enumerate(indices.tolist()):
        r, c = divmod(index, per_row)
        tile = pixels[r * p : (r + 1) * p, c * p : (c + 1) * p, chans]
        tile[...] = values[j, : tile.shape[0], : tile.shape[1]]
