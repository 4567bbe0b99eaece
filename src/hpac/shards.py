"""Patches and shards: one shard of P x P patches <-> range-coder words, the one loop both
directions share.

::

    shard (S, P, P, c) --integer mixtures (CSI steps: the encoder's spans of groups, the decoder's groups)-->
        per group g = c + 2r, per channel: [zero flags] -> AFC tables -> range coder

Patches are independent, so shards are coded concurrently (:mod:`hpac.parallel`). The network
and the tables are integer arithmetic (:mod:`hpac.nn.integer`, :mod:`hpac.entropy.afc`): the
decoder computes the encoder's numbers on any machine, thread count or instruction set.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import fileformat
from .entropy import afc, zeroflags
from .errors import ChecksumError, FormatError
from .nn import integer
from .nn.architecture import ModelConfig
from .nn.csi import CSIStepper, plane_params
from .nn.schedule import group_schedule
from .zoo.catalog import CodecModel

MAX_SHARD_CACHE_BYTES = 512 << 20  # CSI caches of one shard: the most a decoder allocates per worker
SHARD_MULTIPLE = 2  # shard count rounded up to a multiple of this: two workers stay busy


def shard_cap(patch: int, patch_cache_bytes: int = 0) -> int:
    """The most patches one shard may hold: fileformat.MAX_SHARD_PIXELS pixels and
    MAX_SHARD_CACHE_BYTES of CSI caches (``patch_cache_bytes``: a patch's,
    :func:`hpac.nn.csi.cache_bytes`)."""
    most = fileformat.max_patches_per_shard(patch)
    if patch_cache_bytes:  # binds only for a wide model on small patches, never for the catalog's
        most = max(1, min(most, MAX_SHARD_CACHE_BYTES // patch_cache_bytes))
    return most


PATCH_WORK = 1 / 16  # a patch's fixed cost (its steps' overhead), in whole patches' positions


def shard_sizes(cfg: ModelConfig, valid: np.ndarray, patch_cache_bytes: int = 0) -> list[int]:
    """Patches of each shard, consecutive in the plane's patch order. A function of the image's
    geometry and the model only (never of the thread count, so the bytes do not depend on it):

    * as few shards as :func:`shard_cap` allows, rounded up to a multiple of SHARD_MULTIPLE
      where there are enough patches (two workers stay busy);
    * cut where the shards' work is most even. A patch's work is the positions the coder
      computes (:func:`hpac.nn.integer.patch_extents`' area) plus PATCH_WORK: image-edge
      patches are cheap, and equal patch counts left a worker idle for up to a quarter of a
      photo's time.

    Args:
        valid: (M, P, P) bool, the plane's model-coded patches.
    """
    m, p = valid.shape[0], cfg.patch
    if m == 0:
        return []
    cap = shard_cap(p, patch_cache_bytes)
    n = -(-m // cap)
    n = min(m, -(-n // SHARD_MULTIPLE) * SHARD_MULTIPLE)
    ext = integer.patch_extents(cfg, valid)
    work = np.cumsum(ext[:, 0] * ext[:, 1] + int(PATCH_WORK * p * p))  # int64: exact comparisons
    sizes, start = [], 0
    for k in range(1, n):  # the k-th cut: nearest to k / n of the work, every later shard 1 .. cap patches
        lo, hi = max(start + 1, m - (n - k) * cap), min(start + cap, m - (n - k))
        ends = np.arange(lo, hi + 1)
        end = int(ends[np.argmin(np.abs(work[ends - 1] * n - work[-1] * k))])
        sizes.append(end - start)
        start = end
    return sizes + [m - start]


def to_patches(sym: np.ndarray, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, c) ints -> zero-padded patches (N, P, P, c) of the same dtype and their validity (N, P, P)."""
    h, w, c = sym.shape
    ph, pw = -(-h // patch), -(-w // patch)
    buf = np.zeros((ph * patch, pw * patch, c), dtype=sym.dtype)
    buf[:h, :w] = sym
    p = buf.reshape(ph, patch, pw, patch, c).transpose(0, 2, 1, 3, 4).reshape(-1, patch, patch, c)
    return np.ascontiguousarray(p), valid_mask(h, w, patch)


def valid_mask(h: int, w: int, patch: int) -> np.ndarray:
    """(N, P, P) bool: which positions of the patch grid of an h x w image are real pixels."""
    ph, pw = -(-h // patch), -(-w // patch)
    valid = np.zeros((ph * patch, pw * patch), dtype=bool)
    valid[:h, :w] = True
    v = valid.reshape(ph, patch, pw, patch).transpose(0, 2, 1, 3).reshape(-1, patch, patch)
    return np.ascontiguousarray(v)


def _group_positions(sched, g: int, batch: int) -> np.ndarray:
    """(B n,) int64: group g's positions as flat indices into a shard's (B, P, P) grid, patches outer."""
    p = sched.patch
    return ((np.arange(batch) * (p * p))[:, None] + sched.flat[g][None, :]).reshape(-1)


def _last_group(valid: np.ndarray) -> int:
    """Largest group index g = c + 2r holding a real (non-padding) pixel; -1 if none."""
    rr, cc = np.nonzero(valid.any(axis=0))
    return int((cc + 2 * rr).max()) if rr.size else -1


@dataclass(frozen=True)
class Encode:
    """The encoder's side of a shard: the symbols it writes."""

    symbols: np.ndarray  # (B, P, P, c) integer symbols


@dataclass(frozen=True)
class Decode:
    """The decoder's side of a shard: the range-coder words it reads."""

    words: np.ndarray  # (n,) uint32


def code_shard(model: CodecModel, bits: int, valid: np.ndarray, side: Encode | Decode, floored: bool = False,
               zero_flags: bool = False, cdf_entries: bool = True):
    """Encode or decode one shard of patches, as ``side`` says.

    The encoder computes every position's mixture patch by patch, many groups a step
    (:func:`hpac.nn.csi.plane_params`); the decoder steps group by group
    (:class:`hpac.nn.csi.CSIStepper`). Both get the same integers, so both hand the range
    coder the same tables (:mod:`hpac.entropy.afc`), in the same (group, channel) order.

    Args:
        valid: (B, P, P) bool, False on padding (not coded, network input 0).
        floored: floored tables (:func:`hpac.entropy.afc.floor_tables`, a file's option).
        zero_flags: code a "symbol is 0" flag ahead of each subpixel of this 1-channel
            plane (:mod:`hpac.entropy.zeroflags`).
        cdf_entries: the AFC table entries of format version 10 (False: of 8 and 9), which the
            decoder reads from the file's version (:data:`hpac.fileformat.CDF_ENTRIES_SINCE`).
    Returns:
        Encode: (n,) uint32 words; Decode: (B, P, P, c) int32 symbols.
    """
    import constriction

    net = model.integer(bits)
    cfg = model.config
    b = valid.shape[0]
    ch = cfg.channels
    if zero_flags and ch != 1:
        raise FormatError("zero flags are defined for 1-channel planes only")
    sched = group_schedule(cfg.patch, cfg.kernel)
    p = cfg.patch
    if isinstance(side, Encode):
        coder = constriction.stream.queue.RangeEncoder()
        sym = side.symbols.astype(np.int64)
        # the parameters in the order the coder reads them, in streams (never zeroed: every
        # coded row is written, padding shares the scratch row)
        order, sizes, rows = coding_order(cfg, valid)
        plane = plane_params(net, sym, valid, out=np.empty((order.size + 1, cfg.n_params), net.params_dtype),
                             rows=rows)
        flags = zeroflags.ZeroFlags() if zero_flags else None
        _encode_groups(coder, net, plane, sym, order, sizes, valid, bits, floored, flags, cdf_entries)
        return coder.get_compressed()
    coder = constriction.stream.queue.RangeDecoder(side.words)
    out = np.zeros((b, p, p, ch), np.int64)
    # per patch, what reaches its real pixels: an image-edge patch skips the rest
    stepper = CSIStepper(net, b, integer.patch_extents(cfg, valid))
    # positions as flat indices into the shard: a step codes a few hundred pixels, where a
    # tensor library's per-call overhead was a tenth of decoding
    out_rows = out.reshape(b * p * p, ch)
    flat_valid = valid.reshape(-1)
    flags = zeroflags.ZeroFlags() if zero_flags else None
    top = float((1 << bits) - 1)
    for g in range(_last_group(valid) + 1):  # later groups hold only padding: nothing to code
        r, c = sched.rows[g], sched.cols[g]
        n = r.size
        pos = _group_positions(sched, g, b)
        vi = np.flatnonzero(flat_valid[pos])
        if vi.size == b * n:  # no padding in this group: views instead of gathers
            vi = slice(None)
        params = stepper.params(g).reshape(b * n, -1)[vi]
        q = np.zeros((b * n, ch))
        at = pos[vi]
        for cc in range(ch):
            w, mu, s = integer.units(net, params, cc, q[vi])
            if flags is None:
                val = afc.decode_symbols(coder, w, mu, s, bits, floored, cdf_entries=cdf_entries)
            else:  # the flags' contexts: neighbours coded earlier, the mixture's mass at 0
                ctx = flags.contexts(flags.neighbour_pairs(out, valid, r, c)[vi], afc.mass_below(1, w, mu, s))
                nz = flags.decode(coder, ctx, floored) == 0
                val = np.zeros(nz.shape[0], np.int64)
                val[nz] = afc.decode_symbols(coder, w[nz], mu[nz], s[nz], bits, floored, low=1,
                                             cdf_entries=cdf_entries)
            out_rows[at, cc] = val
            q[vi, cc] = val * 2.0 - top
        stepper.write_pixels(g, q.reshape(b, n, ch))
    if out.size and int(out.max()) >= (1 << bits):
        raise ChecksumError("decoded values out of range: corrupt payload")
    return out.astype(np.int32)


def coding_order(cfg: ModelConfig, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The order the coder takes a shard's real pixels in: groups, then patches, then the
    group's positions.

    Args:
        valid: (B, P, P) bool.
    Returns:
        order (n,) int64: their flat positions in the shard (B P P); sizes (G,) int64: each
        group's count of them; rows (B, P P) int64: each position's place in that order, n
        (a scratch row) on padding.
    """
    b, p = valid.shape[0], cfg.patch
    sched = group_schedule(p, cfg.kernel)
    flat_valid = valid.reshape(-1)
    per_group = [pos[flat_valid[pos]] for pos in (_group_positions(sched, g, b) for g in range(_last_group(valid) + 1))]
    order = np.concatenate(per_group) if per_group else np.zeros(0, np.int64)
    rows = np.full(b * p * p, order.size, np.int64)
    rows[order] = np.arange(order.size)
    return order, np.array([g.size for g in per_group], np.int64), rows.reshape(b, p * p)


ENCODE_BATCH_ROWS = 1 << 13  # the encoder codes groups in batches of about this many pixels


def _encode_groups(coder, net, plane: np.ndarray, sym: np.ndarray, order: np.ndarray, sizes: np.ndarray,
                   valid: np.ndarray, bits: int, floored: bool, flags: zeroflags.ZeroFlags | None,
                   cdf_entries: bool) -> None:
    """The encoder's side of code_shard's loop: the same (group, channel) calls in the same
    order, their mixtures and tables built for many groups at once
    (:func:`hpac.entropy.afc.encode_calls`).

    Args:
        plane: (n + 1, n_params) the integer parameters of the shard's real pixels in coding
            order (groups, then patches, then the group's positions), a scratch row last;
            sym: (B, P, P, C) int64; order: (n,) int64 those pixels' flat positions in the
            shard (B P P); sizes: (G,) int64 each group's count of them.
        flags: a 1-channel plane's zero flags (:mod:`hpac.entropy.zeroflags`), or None. The
            encoder knows every symbol, so each position's neighbour contexts come from one
            pass over the shard, and a batch's flag tables from the counts group by group.
    """
    b, p = valid.shape[0], valid.shape[1]
    ch = sym.shape[-1]
    syms = sym.reshape(b * p * p, ch)[order]  # in coding order, as the plane
    qs = integer.centred(syms, bits)
    if flags is not None:  # every real pixel's neighbour pairs, in coding order
        every = np.arange(p * p)
        pairs = flags.neighbour_pairs(sym, valid, every // p, every % p)[order]
    first = np.concatenate([[0], np.cumsum(sizes)])  # each group's first row
    g0 = 0
    while g0 < sizes.size:
        g1, n = g0, 0
        while g1 < sizes.size and (n == 0 or n + sizes[g1] <= ENCODE_BATCH_ROWS):
            n += sizes[g1]
            g1 += 1
        lo, hi = int(first[g0]), int(first[g1])
        starts = first[g0 : g1 + 1] - lo
        if flags is not None:  # one channel: flags ahead of each group's nonzero symbols
            w, mu, s = integer.units(net, plane, 0, qs, np.arange(lo, hi))
            target = syms[lo:hi, 0]
            ctx = flags.contexts(pairs[lo:hi], afc.mass_below(1, w, mu, s))
            is0 = (target == 0).astype(np.int32)
            lead = [flags.encode_op(ctx[starts[i] : starts[i + 1]], is0[starts[i] : starts[i + 1]])
                    for i in range(g1 - g0)]
            nz = is0 == 0
            bounds = np.concatenate([[0], np.cumsum(nz)])[starts]  # each group's nonzero symbols
            afc.encode_calls(coder, w[nz], mu[nz], s[nz], bits, target[nz], bounds, floored, low=1, lead=lead,
                             cdf_entries=cdf_entries)
        else:  # (group, channel) segments in coding order: group outer, channel inner, the group's rows
            seg_sizes = np.repeat(sizes[g0:g1], ch)
            bounds = np.concatenate([[0], np.cumsum(seg_sizes)])
            seg = np.repeat(np.arange(seg_sizes.size), seg_sizes)
            row = lo + starts[seg // ch] + np.arange(bounds[-1]) - bounds[seg]
            chan = seg % ch
            w, mu, s = integer.units(net, plane, chan, qs, row)
            afc.encode_calls(coder, w, mu, s, bits, syms[row, chan], bounds, floored, cdf_entries=cdf_entries)
        g0 = g1


def refused_table(exc: BaseException) -> bool:
    """Whether a coding failure is constriction refusing a probability table: a Rust panic
    (pyo3's PanicException), raised in this process or reported by a worker
    (:class:`hpac.parallel.WorkerError`). Only that failure do floored tables cure."""
    return getattr(exc, "kind", type(exc).__name__) == "PanicException"


_WARMED: set = set()


def warm_kernels(model: CodecModel, bits: int, zero_flags: bool) -> None:
    """Run every kernel coding uses once, in this process, on one 8 x 8 patch: forked workers
    then inherit them loaded instead of each loading numba's cache (about 0.3 s) and building
    AFC's tables (0.5 s) again."""
    key = (model.weights_id, id(model.state), bits, zero_flags)
    if key in _WARMED:
        return
    small = model.with_patch(8)
    sym = np.zeros((1, 8, 8, model.config.channels), np.int64)
    sym[0, ::2] = (1 << bits) - 1
    valid = np.ones((1, 8, 8), bool)
    try:
        words = code_shard(small, bits, valid, Encode(sym), zero_flags=zero_flags)
        code_shard(small, bits, valid, Decode(words), zero_flags=zero_flags)
    except BaseException as exc:  # (a Rust panic is a BaseException)
        if refused_table(exc):  # the shards' own coding decides what happens (floored tables,
            return  # or a clear error): a warm-up never fails a file
        raise
    _WARMED.add(key)
