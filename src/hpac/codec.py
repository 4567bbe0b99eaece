"""Image <-> .hpac bytes: planes, patches, shards, and the one coding loop both sides share.

::

    pixels (H,W,C) --planes (RGB | gray)--> patches (N,P,P,c) --shards of S patches-->
        per shard: integer mixtures (encoder: one pass; decoder: CSI steps)
        -> per group g, per channel: [zero flags] -> AFC tables -> range coder

A 3-channel plane uses the RGB model, every other channel a 1-channel plane. Patches are
independent, so shards are coded concurrently. The network and the tables are integer
arithmetic (:mod:`hpac.quant`, :mod:`hpac.afc`): the decoder computes the encoder's numbers
on any machine, thread count or instruction set. Memory is bounded by the shards in flight.
"""
from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np
import torch

from . import adapt, afc, container, quant, regions, valuemap, zeroflags
from .catalog import CodecModel, default_model_name, load_catalog_model
from .csi import CSIStepper, cache_bytes, group_schedule
from .errors import ChecksumError, CodingError, FormatError, ModelMismatchError
from .imageio import Image, as_image
from .parallel import default_threads, run_jobs, single_threaded_torch

MAX_SHARD_CACHE_BYTES = 512 << 20  # CSI caches of one shard: the most a decoder allocates per worker
DEFAULT_MAX_DECODE_PIXELS = 1 << 26  # 67 Mpx (8192 x 8192): larger needs an explicit max_pixels
SHARD_MULTIPLE = 2  # shard count rounded up to a multiple of this: two workers stay busy
PLAIN_MARGIN = 0.005  # an adapted file this much below the effort-0 floor skips coding effort 0


class _Plane(NamedTuple):
    """A plane prepared for coding: what the encoder decided before any range coding."""

    first: int  # first channel
    nch: int  # channels
    model: CodecModel
    coded: np.ndarray  # (H, W, nch) coded symbols
    patches: torch.Tensor  # (N, P, P, nch) coded symbols in the model's effort-0 patches
    valid: torch.Tensor  # (N, P, P) bool
    fitted: adapt.Fit | None  # SARP-FT adapters, if any
    vmap: valuemap.ValueMap
    zero_flags: bool  # zeros flagged (hpac.zeroflags)
    classical: np.ndarray  # (N,) bool: patches WebP codes (hpac.regions); the model codes the others
    regions: bytes  # their section of the plane header (b"" where there are none)


def patches_per_shard(n_patches: int, patch: int, patch_cache_bytes: int = 0) -> int:
    """Patches per shard for a plane of ``n_patches``: a function of the image and the model
    only (never of the thread count, so the bytes do not depend on it), at most
    container.MAX_SHARD_PIXELS pixels and MAX_SHARD_CACHE_BYTES of CSI caches a shard
    (``patch_cache_bytes``: a patch's, :func:`hpac.csi.cache_bytes`), and a shard count that
    is a multiple of SHARD_MULTIPLE where there are enough patches."""
    most = container.max_patches_per_shard(patch)
    if patch_cache_bytes:  # binds only for a wide model on small patches, never for the catalog's
        most = max(1, min(most, MAX_SHARD_CACHE_BYTES // patch_cache_bytes))
    shards = -(-n_patches // most)
    shards = min(n_patches, -(-shards // SHARD_MULTIPLE) * SHARD_MULTIPLE)
    return max(1, -(-n_patches // max(1, shards)))


def plane_layout(channels: int) -> list[tuple[int, int]]:
    """(first_channel, n_channels) of each plane: RGB(A) -> [RGB, A]; other counts -> gray planes."""
    if channels in (3, 4):
        return [(0, 3)] + ([(3, 1)] if channels == 4 else [])
    return [(c, 1) for c in range(channels)]


def to_patches(sym: np.ndarray, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, c) ints -> zero-padded patches (N, P, P, c) of the same dtype and their validity (N, P, P)."""
    h, w, c = sym.shape
    ph, pw = -(-h // patch), -(-w // patch)
    buf = np.zeros((ph * patch, pw * patch, c), dtype=sym.dtype)
    buf[:h, :w] = sym
    p = buf.reshape(ph, patch, pw, patch, c).transpose(0, 2, 1, 3, 4).reshape(-1, patch, patch, c)
    return torch.from_numpy(np.ascontiguousarray(p)), valid_mask(h, w, patch)


def valid_mask(h: int, w: int, patch: int) -> torch.Tensor:
    """(N, P, P) bool: which positions of the patch grid of an h x w image are real pixels."""
    ph, pw = -(-h // patch), -(-w // patch)
    valid = np.zeros((ph * patch, pw * patch), dtype=bool)
    valid[:h, :w] = True
    v = valid.reshape(ph, patch, pw, patch).transpose(0, 2, 1, 3).reshape(-1, patch, patch)
    return torch.from_numpy(np.ascontiguousarray(v))


def _last_group(valid: torch.Tensor) -> int:
    """Largest group index g = c + 2r holding a real (non-padding) pixel; -1 if none."""
    rr, cc = torch.nonzero(valid.any(dim=0), as_tuple=True)
    return int((cc + 2 * rr).max()) if rr.numel() else -1


PLANE_PASS_PIXELS = 1 << 14  # the encoder's one pass runs on this many pixels' patches at a time: one 128 x 128
# patch (its activations stay in cache: 7.5 s/MP against 12.7 at four patches a pass, one thread)


def code_shard(model: CodecModel, bits: int, valid: torch.Tensor, sym: torch.Tensor | None = None,
                   stream: np.ndarray | None = None, floored: bool = False, zero_flags: bool = False):
    """Encode (``sym`` given) or decode (``stream`` given) one shard of patches.

    The encoder computes every position's mixture in one pass over its patches
    (:func:`hpac.quant.plane_params`); the decoder steps group by group
    (:class:`hpac.csi.CSIStepper`). Both get the same integers, so both hand the range coder
    the same tables (:mod:`hpac.afc`).

    Args:
        valid: (B, P, P) bool, False on padding (not coded, network input 0).
        sym: (B, P, P, c) int64 symbols to encode.
        stream: (n,) uint32 range-coder words to decode.
        floored: floored tables (:func:`hpac.afc.floor_tables`, a file's option).
        zero_flags: code a "symbol is 0" flag ahead of each subpixel of this 1-channel
            plane (:mod:`hpac.zeroflags`).
    Returns:
        encode: (n,) uint32 words; decode: (B, P, P, c) int32 symbols.
    """
    import constriction

    net = model.integer(bits)
    cfg = model.config
    b = valid.shape[0]
    ch = cfg.channels
    encoding = sym is not None
    if zero_flags and ch != 1:
        raise FormatError("zero flags are defined for 1-channel planes only")
    coder = constriction.stream.queue.RangeEncoder() if encoding else constriction.stream.queue.RangeDecoder(stream)
    sched = group_schedule(cfg.patch, cfg.kernel)
    if encoding:
        sym = sym.to(torch.int64)
        out = sym
        step = max(1, PLANE_PASS_PIXELS // (cfg.patch * cfg.patch))
        # never zeroed: what the pass leaves out is padding, which no one reads (nor faults in)
        plane = torch.empty(b, cfg.patch, cfg.patch, cfg.n_params, dtype=net.params_dtype)
        for i in range(0, b, step):
            rows, cols = quant.needed_extent(cfg, valid[i : i + step])
            plane[i : i + step, :rows, :cols] = quant.plane_params(net, sym[i : i + step, :rows, :cols],
                                                                   valid[i : i + step, :rows, :cols])
        q_all = quant.centred(sym, bits)
        if not zero_flags:
            _encode_groups(coder, net, plane, sym, q_all, valid, sched, bits, floored)
            return coder.get_compressed()
    else:
        out = torch.zeros(b, cfg.patch, cfg.patch, ch, dtype=torch.int64)
        stepper = CSIStepper(net, b)
    flags = zeroflags.ZeroFlags() if zero_flags else None
    top = float((1 << bits) - 1)
    for g in range(_last_group(valid) + 1):  # later groups hold only padding: nothing to code
        r, c = sched.rows[g], sched.cols[g]
        n = r.numel()
        params = (plane[:, r, c] if encoding else stepper.params(g)).reshape(b * n, -1)
        vi = torch.nonzero(valid[:, r, c].reshape(-1)).squeeze(1)
        if vi.numel() == b * n:  # no padding in this group: views instead of gathers
            vi = slice(None)
        known = out[:, r, c, :].reshape(b * n, ch) if encoding else None
        q = q_all[:, r, c, :].reshape(b * n, ch) if encoding else torch.zeros(b * n, ch, dtype=torch.float64)
        got = torch.zeros(b * n, ch, dtype=torch.int64)
        for cc in range(ch):
            w, mu, s = quant.units(net, params[vi], cc, q[vi])
            target = known[vi, cc] if encoding else None
            if flags is None:
                val = afc.code_symbols(coder, w, mu, s, bits, target, floored)
            else:
                p0 = torch.from_numpy(afc.mass_below(1, w, mu, s))
                ctx = flags.contexts(flags.neighbour_pairs(out, valid, r, c)[vi], p0)
                is0 = flags.code(coder, ctx, (target == 0).numpy().astype(np.int32) if encoding else None, floored)
                nz = is0 == 0
                val = torch.zeros(nz.shape[0], dtype=torch.int64)
                nzt = torch.from_numpy(nz)
                val[nzt] = afc.code_symbols(coder, w[nz], mu[nz], s[nz], bits, target[nzt] if encoding else None,
                                            floored, low=1)
            got[vi, cc] = val
            if not encoding:
                q[vi, cc] = val.to(torch.float64) * 2.0 - top
        if not encoding:
            out[:, r, c, :] = got.reshape(b, n, ch)
            stepper.write_pixels(g, q.reshape(b, n, ch))
    if encoding:
        return coder.get_compressed()
    if out.numel() and int(out.max()) >= (1 << bits):
        raise ChecksumError("decoded values out of range: corrupt payload")
    return out.to(torch.int32)


ENCODE_BATCH_ROWS = 1 << 13  # the encoder codes groups in batches of about this many pixels


def _encode_groups(coder, net, plane: torch.Tensor, sym: torch.Tensor, q_all: torch.Tensor, valid: torch.Tensor,
                   sched, bits: int, floored: bool) -> None:
    """The encoder's side of code_shard's loop (no zero flags): the same (group, channel)
    calls in the same order, their mixtures and tables built for many groups at once
    (:func:`hpac.afc.encode_calls`).

    Args:
        plane: (B, P, P, n_params) every position's integer parameters; sym: (B, P, P, C) int64;
            q_all: sym centred (float64).
    """
    b, p = valid.shape[0], sched.patch
    ch = sym.shape[-1]
    base = (torch.arange(b) * (p * p))[:, None]
    flat_valid = valid.reshape(-1)
    per_group = []  # per group: flat positions of its real pixels, patches outer
    for g in range(_last_group(valid) + 1):
        pos = (base + (sched.rows[g] * p + sched.cols[g])[None, :]).reshape(-1)
        per_group.append(pos[flat_valid[pos]])
    params = plane.reshape(b * p * p, -1)
    syms = sym.reshape(b * p * p, ch)
    qs = q_all.reshape(b * p * p, ch)
    g0 = 0
    while g0 < len(per_group):
        g1, rows = g0, 0
        while g1 < len(per_group) and (rows == 0 or rows + per_group[g1].numel() <= ENCODE_BATCH_ROWS):
            rows += per_group[g1].numel()
            g1 += 1
        idx = torch.cat(per_group[g0:g1])
        sizes = np.array([per_group[g].numel() for g in range(g0, g1)], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        par, q, target = params[idx], qs[idx], syms[idx].numpy()
        units = [quant.units(net, par, cc, q) for cc in range(ch)]  # (w, mu, s) per channel
        # rows of (group, channel) segments in coding order: group outer, channel inner
        order = np.concatenate([cc * rows + np.arange(starts[i], starts[i + 1])
                                for i in range(g1 - g0) for cc in range(ch)])
        w, mu, s = (np.concatenate([u[k] for u in units])[order] for k in range(3))
        sy = target.T.reshape(-1)[order]
        bounds = np.concatenate([[0], np.cumsum(np.repeat(sizes, ch))])
        afc.encode_calls(coder, w, mu, s, bits, sy, bounds, floored)
        g0 = g1


_WARMED: set = set()


def _warm_kernels(model: CodecModel, bits: int, zero_flags: bool) -> None:
    """Run every kernel coding uses once, in this process, on one 8 x 8 patch: forked workers
    then inherit them loaded instead of each loading numba's cache (about 0.3 s) and building
    AFC's tables (0.5 s) again."""
    key = (model.weights_id, id(model.net), bits, zero_flags)
    if key in _WARMED:
        return
    small = model.with_patch(8)
    sym = torch.zeros(1, 8, 8, model.config.channels, dtype=torch.int64)
    sym[0, ::2] = (1 << bits) - 1
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    words = code_shard(small, bits, valid, sym=sym, zero_flags=zero_flags)
    code_shard(small, bits, valid, stream=words, zero_flags=zero_flags)
    _WARMED.add(key)


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
            adapters first (SARP-FT, :mod:`hpac.adapt`) and keep them only where they pay.
        seed: seed of the fine-tuning (the bytes are a function of image, effort and seed).
        floored: code with floored AFC tables from the start; the encoder falls back to them
            by itself when the range coder refuses a normal table.
        zero_flags: flag the zeros of gray planes where they are common (format version 6,
            :func:`hpac.zeroflags.wanted`); False writes the files of earlier releases.
        classical_regions: let lossless WebP code the patches of 8-bit planes where the model
            loses (:mod:`hpac.regions`); False: the model codes every patch.
    """
    img = pixels if isinstance(pixels, Image) else as_image(pixels)
    arr = img.pixels
    h, w, c = arr.shape
    if container.too_big(h, w):
        raise FormatError(f"image {h}x{w} exceeds the format limit of {container.MAX_PIXELS} pixels")
    plan = adapt.effort_of(effort)
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
            tile = adapt.fit_tile(model.config, h, w)
            if tile == model.config.patch:
                tiles, tvalid, coding = patches, valid, None
            else:  # fit on tiles; the effort-0 estimate still comes from the coding patches
                tiles, tvalid = to_patches(coded, tile)
                coding = (patches.to(torch.int64), valid)
            grid = (-(-h // tile), -(-w // tile))
            with single_threaded_torch():
                fitted = adapt.fit(model.net, tiles.to(torch.int64), tvalid, vmap.coding_bits, grid, plan,
                                   seed=seed, workers=workers, progress=progress, zero_flags=flagged,
                                   coding=coding)
        planes.append(_Plane(first, nch, model, coded, patches, valid, fitted, vmap, flagged, classical, section))
    if all(p.fitted is None for p in planes):
        return _encode_planes(img, planes, workers, False, floored)[0]
    data, plane_bytes = _encode_planes(img, planes, workers, True, floored)
    # The effort-0 file would hold at least each adapted plane's effort-0 floor (hpac.adapt.Fit)
    # instead of what it holds now. Only where the adapted file is not clearly smaller than
    # that is the effort-0 file coded too, and the smaller of the two kept: no file is bigger
    # than at effort 0.
    plain_estimate = len(data) + sum(p.fitted.effort0_floor / 8 - nb for p, nb in zip(planes, plane_bytes)
                                     if p.fitted is not None)
    if len(data) <= (1 - PLAIN_MARGIN) * plain_estimate:
        return data
    plain = _encode_planes(img, planes, workers, False, floored)[0]
    return data if len(data) < len(plain) else plain


def _model_bytes(model: CodecModel, bits: int, zero_flags: bool, patches: torch.Tensor, valid: torch.Tensor,
                 indices: list[int], side: int) -> list[int]:
    """Bytes of the top-left side x side pixels of each of ``patches[indices]`` coded by the
    model alone (the classical-region decision's measure, :func:`hpac.regions.choose`); in this
    process (a few small patches: forked workers would cost more); a patch the range coder
    refuses costs its raw bits."""
    out = []
    for i in indices:
        v = valid[i : i + 1].clone()
        v[:, side:] = False
        v[:, :, side:] = False
        try:
            out.append(int(code_shard(model, bits, v, sym=patches[i : i + 1], zero_flags=zero_flags).nbytes))
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except BaseException:  # a Rust panic: the file will be coded with floored tables
            out.append(int(v.sum()) * patches.shape[-1] * bits // 8)
    return out


def _encode_planes(img: Image, planes: list[_Plane], workers: int, use_adapters: bool,
                   floored: bool) -> tuple[bytes, list[int]]:
    """Code the prepared planes into a file; where the range coder refuses a table, again with
    floored tables (the file says so).

    Returns the file and, per plane, the bytes of its streams and adapters."""
    jobs, layout = [], []
    for first, nch, model, coded, patches, valid, fitted, vmap, flagged, classical, section in planes:
        blob = b""
        adapted = model.adapted(fitted.merged(model.net)) if use_adapters and fitted is not None else None
        if adapted is not None and (adapted.config.patch == patches.shape[1] or not classical.any()):
            # (the regions are decided on the effort-0 patches: a plane with some keeps those)
            model, blob = adapted, fitted.blob
            if model.config.patch != patches.shape[1]:
                patches, valid = to_patches(coded, model.config.patch)
        if classical.any():  # (then the patches are still the effort-0 ones the mask is of)
            keep = torch.from_numpy(~classical)
            patches, valid = patches[keep], valid[keep]
        p = model.config.patch
        pps = patches_per_shard(patches.shape[0], p, cache_bytes(model.config, 1))
        shards = [(valid[i : i + pps], patches[i : i + pps]) for i in range(0, patches.shape[0], pps)]
        layout.append((first, nch, model, pps, len(shards), blob, vmap.to_bytes(img.bits), flagged, section))
        jobs += [lambda v=v, s=s, m=model, b=vmap.coding_bits, z=flagged:
                 code_shard(m, b, v, sym=s, floored=floored, zero_flags=z) for v, s in shards]
    if workers > 1 and len(jobs) > 1:
        for _, nch, model, *_rest, vbytes, flagged, _section in layout:
            _warm_kernels(model, valuemap.ValueMap.from_bytes(vbytes, img.bits).coding_bits, flagged)
    try:
        streams = run_jobs(jobs, workers)
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as exc:  # a Rust panic is a BaseException; forked workers report it as RuntimeError
        if not floored:
            return _encode_planes(img, planes, workers, use_adapters, True)
        raise CodingError(f"the range coder refused a probability table ({exc}); no file was written") from None
    it = iter(streams)
    headers = []
    for first, nch, model, pps, n_shards, blob, vbytes, flagged, section in layout:
        lens = tuple(next(it).nbytes for _ in range(n_shards))
        headers.append(container.PlaneHeader(first, nch, model.config.patch, pps, model.name, model.weights_id,
                                             lens, blob, vbytes, flagged, section))
    arr = img.pixels
    header = container.Header(arr.shape[0], arr.shape[1], arr.shape[2], arr.dtype.name, img.bits,
                              container.pixel_digest(arr), tuple(headers), img.metadata_kind, img.metadata,
                              floored)
    plane_bytes = [sum(ph.shard_lengths) + len(ph.adapter) + len(ph.regions) for ph in headers]
    return container.write(header, [s.astype("<u4").tobytes() for s in streams]), plane_bytes


def resolve_model(name: str, weights_id: str, extra: list[CodecModel] | None = None) -> CodecModel:
    """The model a file names: a caller-supplied one with that id, else the catalog's."""
    for m in extra or []:
        if m.weights_id == weights_id:
            return m
    try:
        model = load_catalog_model(name)
    except ModelMismatchError:
        raise ModelMismatchError(f"file needs model {name} (weights {weights_id}), which is not installed") from None
    if model.weights_id != weights_id:
        raise ModelMismatchError(
            f"file needs model {name} with weights {weights_id}; installed {name} has weights {model.weights_id} "
            f"(decode with the hpac release that wrote it, or pass those weights with --model)"
        )
    return model


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
                          f"above this decoder's limit of {limit / 1e6:.1f} Mpx (raise it with --max-pixels)")
    jobs, places = [], []
    pos = 0
    for ph in header.planes:
        vmap = valuemap.ValueMap.from_bytes(ph.value_map, header.bits)
        model = resolve_model(ph.model_name, ph.weights_id, models)
        if model.config.channels != ph.n_channels:
            raise FormatError(f"plane geometry does not match model {model.name}")
        model = model.with_patch(ph.patch)  # files of any P decode (earlier releases wrote P = 64)
        need = cache_bytes(model.config, ph.patches_per_shard)
        if need > MAX_SHARD_CACHE_BYTES:  # a small file must not make the decoder allocate gigabytes
            raise FormatError(f"a shard of {ph.patches_per_shard} patches of {ph.patch} x {ph.patch} would take "
                              f"{need >> 20} MiB of decoder caches with model {model.name}, above the "
                              f"{MAX_SHARD_CACHE_BYTES >> 20} MiB any encoder writes")
        if ph.adapter:
            rank, qstep, ints = adapt.decode_ints(model.net, ph.adapter)
            model = replace(model, net=adapt.merge(model.net, rank, qstep, ints))
        indices = ph.model_patches(header.height, header.width)
        valid = valid_mask(header.height, header.width, ph.patch)[torch.from_numpy(indices)]
        for i, ln in enumerate(ph.shard_lengths):
            words = np.frombuffer(payload[pos : pos + ln], dtype="<u4").astype(np.uint32)
            pos += ln
            at = slice(i * ph.patches_per_shard, (i + 1) * ph.patches_per_shard)
            jobs.append(lambda v=valid[at], words=words, m=model, b=vmap.coding_bits, z=ph.zero_flags:
                        code_shard(m, b, v, stream=words, floored=header.floored_tables, zero_flags=z))
            places.append((ph, indices[at], vmap))
        if (threads or default_threads()) > 1 and len(ph.shard_lengths) > 1:
            _warm_kernels(model, vmap.coding_bits, ph.zero_flags)
    try:
        results = run_jobs(jobs, threads or default_threads())
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as exc:  # constriction rejects garbage streams (a Rust panic is a BaseException)
        raise ChecksumError(f"payload is corrupt ({type(exc).__name__}: {exc})") from None
    dtype = np.dtype(header.dtype)
    offset = (1 << (header.bits - 1)) if dtype == np.int16 else 0
    pixels = np.empty((header.height, header.width, header.channels), dtype=dtype)
    for (ph, indices, vmap), shard in zip(places, results):  # values no map produces raise ChecksumError
        _place_patches(pixels, vmap.inverse(shard.numpy(), header.bits) - offset, ph, indices)
    for ph in header.planes:
        if ph.regions:  # (container.read refused them in planes of more than 8 bits)
            chosen = ph.classical(header.height, header.width)
            values = regions.decode(ph.regions, chosen.size, header.height, header.width, ph.n_channels)
            _place_patches(pixels, to_patches(values, ph.patch)[0].numpy()[chosen], ph, np.flatnonzero(chosen))
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
