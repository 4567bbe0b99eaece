"""The .hpac byte layout (little-endian throughout). Normative spec: docs/format.md.

::

    magic        8  b"HPAC\\r\\n\\x1a\\n"
    version      u16  FORMAT_VERSION
    header_len   u32  bytes of the header body that follows
    header body:
      height u32, width u32, channels u8, dtype u8 (DTYPE_CODES), bits u8, n_planes u8
      pixel_sha256 32 bytes  (sha256 of the decoded array, C order, little-endian)
      payload_crc  u32  CRC-32 of the payload (corruption is refused before any decoding)
      coding_options u8  bit 0: floored AFC tables (hpac.entropy.afc.floor_tables); other bits 0
      per plane:  first_channel u8, n_channels u8, patch u16, patches_per_shard u32 (the largest shard's),
                  model_name_len u8, model_name, weights_id 8 bytes, n_shards u32,
                  shard patch counts u32 * n_shards (versions 9 and 10; version 8: patches_per_shard each,
                  the last the rest), shard byte lengths u32 * n_shards,
                  adapter_len u32, adapter bytes (SARP-FT integers; 0 = none)
                  value_map_len u32, value map bytes (hpac.entropy.valuemap; 0 = identity)
                  plane_options u8  bit 0: zero flags (hpac.entropy.zeroflags), bit 1: classical regions;
                                    other bits 0
                  if bit 1: regions_len u32, regions (hpac.entropy.regions: patch bitmap, WebP stream)
      metadata_kind u8 (0 none, 1 DICOM header, 2 image metadata: hpac.io.metadata), metadata_len u32,
      metadata bytes
    header_crc   u32  CRC-32 of everything above
    payload      the shard streams, in plane then shard order (each a run of u32 words)

Every length and count is checked against hard limits (:mod:`hpac.fileformat`, the format's
constants) and against the file size before anything is allocated.
"""
from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, replace

import numpy as np

from .entropy import regions
from .errors import ChecksumError, FormatError
from .fileformat import (DTYPE_CODES, DTYPE_NAMES, FLOORED_BIT, FORMAT_VERSION, LAST_RELEASE_OF, MAGIC, MAX_ADAPTER,
                         MAX_METADATA, MAX_PATCH, MAX_REGIONS, MAX_VALUE_MAP, METADATA_IMAGE, METADATA_KINDS,
                         READ_VERSIONS, REGIONS_BIT, ZERO_FLAGS_BIT, max_patches_per_shard, n_patches, too_big)
from .io import metadata as image_metadata

_FIXED = struct.Struct("<IIBBBB")
_PLANE = struct.Struct("<BBHI")


@dataclass(frozen=True)
class PlaneHeader:
    """One independently coded group of channels (e.g. RGB, or an alpha plane)."""

    first_channel: int
    n_channels: int
    patch: int
    model_name: str
    weights_id: str  # 16 hex digits
    shard_lengths: tuple[int, ...]
    shard_patches: tuple[int, ...]  # patches of each shard, consecutive in model_patches' order
    adapter: bytes = b""  # SARP-FT adapter integers (hpac.adapters.fit), merged into the model by the decoder
    value_map: bytes = b""  # stored values <-> coded symbols (hpac.entropy.valuemap); empty = identity
    zero_flags: bool = False  # a "symbol is 0" flag ahead of every subpixel (hpac.entropy.zeroflags)
    regions: bytes = b""  # patches a classical codec codes (hpac.entropy.regions); empty = the model codes all

    def classical(self, height: int, width: int) -> np.ndarray:
        """(N,) bool: which of the plane's patches the classical stream holds (all False: none)."""
        return regions.bitmap(self.regions, n_patches(height, width, self.patch))

    def model_patches(self, height: int, width: int) -> np.ndarray:
        """(M,) int64 indices of the patches the model's shards hold, in shard order."""
        return np.flatnonzero(~self.classical(height, width))

    @property
    def patches_per_shard(self) -> int:
        """The largest shard's patch count (1 without shards): what a decoder's caches must hold."""
        return max(self.shard_patches, default=1)

    def shard_slices(self) -> list[slice]:
        """Each shard's patches as a slice of :meth:`model_patches`."""
        return shard_slices(self.shard_patches)


def shard_slices(counts: tuple[int, ...] | list[int]) -> list[slice]:
    """Shards of ``counts`` patches each, consecutive (the coding order): their slices."""
    ends = np.cumsum(counts, dtype=np.int64).tolist()
    return [slice(e - n, e) for e, n in zip(ends, counts)]


@dataclass(frozen=True)
class Header:
    height: int
    width: int
    channels: int
    dtype: str
    bits: int
    pixel_sha256: bytes
    planes: tuple[PlaneHeader, ...]
    metadata_kind: int = 0
    metadata: bytes = b""
    floored_tables: bool = False  # AFC tables floored (hpac.entropy.afc.floor_tables)
    version: int = FORMAT_VERSION  # the file's format version (write() writes FORMAT_VERSION only)

    @property
    def payload_len(self) -> int:
        return sum(sum(p.shard_lengths) for p in self.planes)


def pixel_digest(pixels: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(pixels)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return hashlib.sha256(arr.tobytes()).digest()


def write(header: Header, streams: list[bytes]) -> bytes:
    """Serialise a header and the concatenated shard streams (format FORMAT_VERSION only)."""
    if header.version != FORMAT_VERSION:
        raise ValueError(f"this hpac writes format version {FORMAT_VERSION}, not {header.version}")
    body = bytearray(_FIXED.pack(header.height, header.width, header.channels,
                                 DTYPE_CODES[header.dtype], header.bits, len(header.planes)))
    body += header.pixel_sha256
    body += struct.pack("<I", zlib.crc32(b"".join(streams)))
    body += struct.pack("<B", FLOORED_BIT if header.floored_tables else 0)
    for p in header.planes:
        name = p.model_name.encode()
        body += _PLANE.pack(p.first_channel, p.n_channels, p.patch, p.patches_per_shard)
        body += struct.pack("<B", len(name)) + name + bytes.fromhex(p.weights_id)
        n = len(p.shard_lengths)
        body += struct.pack(f"<I{n}I{n}I", n, *p.shard_patches, *p.shard_lengths)
        body += _sized(p.adapter) + _sized(p.value_map)
        body += struct.pack("<B", (ZERO_FLAGS_BIT if p.zero_flags else 0) | (REGIONS_BIT if p.regions else 0))
        if p.regions:
            body += _sized(p.regions)
    body += struct.pack("<BI", header.metadata_kind, len(header.metadata)) + header.metadata
    head = MAGIC + struct.pack("<HI", FORMAT_VERSION, len(body)) + bytes(body)
    return head + struct.pack("<I", zlib.crc32(head)) + b"".join(streams)


def _sized(section: bytes) -> bytes:
    """A u32 length, then the section."""
    return struct.pack("<I", len(section)) + section


class _Reader:
    def __init__(self, buf: bytes, start: int, end: int):
        self.buf, self.pos, self.end = buf, start, end

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise FormatError("header is truncated")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def sized(self, limit: int, what: str) -> bytes:
        """A u32-length-prefixed section of at most ``limit`` bytes (the inverse of ``_sized``)."""
        (n,) = self.unpack("<I")
        if n > limit:
            raise FormatError(f"invalid {what} length in header")
        return self.take(n)

    def unpack(self, st: struct.Struct | str):
        st = st if isinstance(st, struct.Struct) else struct.Struct(st)
        return st.unpack(self.take(st.size))


def read(data: bytes) -> tuple[Header, memoryview]:
    """Parse and validate a .hpac file; returns the header and the payload bytes."""
    data = bytes(data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            raise FormatError("this is a PNG file, not an .hpac file")
        raise FormatError("not an .hpac file (bad magic)")
    if len(data) < len(MAGIC) + 6:
        raise FormatError("file is truncated inside the header")
    version, body_len = struct.unpack_from("<HI", data, len(MAGIC))
    if version in LAST_RELEASE_OF:
        raise FormatError(f"format version {version} was written by hpac {LAST_RELEASE_OF[version]} or earlier: "
                          f"decode it with hpac {LAST_RELEASE_OF[version]} (CHANGELOG.md says how to install it)")
    if version not in READ_VERSIONS:
        raise FormatError(f"unsupported format version {version} (this hpac reads versions "
                          f"{', '.join(map(str, READ_VERSIONS))}; a newer hpac may read it)")
    body_start = len(MAGIC) + 6
    body_end = body_start + body_len
    if body_end + 4 > len(data):
        raise FormatError("file is truncated inside the header")
    (crc,) = struct.unpack_from("<I", data, body_end)
    if zlib.crc32(data[:body_end]) != crc:
        raise ChecksumError("header CRC mismatch: the file is corrupt")
    r = _Reader(data, body_start, body_end)
    h, w, c, dcode, bits, n_planes = r.unpack(_FIXED)
    if h < 1 or w < 1 or too_big(h, w):
        raise FormatError(f"image size {h}x{w} is outside the supported range")
    if not 1 <= c <= 4 or dcode not in DTYPE_NAMES or not 8 <= bits <= 16 or not 1 <= n_planes <= c:
        raise FormatError("invalid image description in header")
    if dcode == DTYPE_CODES["uint8"] and bits != 8:
        raise FormatError("invalid bit depth for 8-bit data")
    digest = r.take(32)
    (payload_crc,) = r.unpack("<I")
    (options,) = r.unpack("<B")
    if options & ~FLOORED_BIT:
        raise FormatError("unknown coding options in header")
    floored = bool(options & FLOORED_BIT)
    planes = []
    next_channel = 0
    for _ in range(n_planes):
        first, nch, patch, pps = r.unpack(_PLANE)
        (name_len,) = r.unpack("<B")
        name = r.take(name_len).decode("ascii", errors="replace")
        wid = r.take(8).hex()
        (n_shards,) = r.unpack("<I")
        if first != next_channel or not 1 <= nch <= c - first or not 8 <= patch <= MAX_PATCH or pps < 1:
            raise FormatError("invalid plane description in header")
        if pps > max_patches_per_shard(patch):  # the decoder codes a shard's patches at once: bound its memory
            raise FormatError(f"{pps} patches per shard of {patch} x {patch} pixels is above the format's limit")
        most = n_patches(h, w, patch) if version >= 9 else -(-n_patches(h, w, patch) // pps)
        if n_shards > most:  # checked exactly once the regions are read
            raise FormatError("shard count does not match the image size")
        counts = r.unpack(f"<{n_shards}I") if version >= 9 else ()
        lengths = r.unpack(f"<{n_shards}I")
        adapter = r.sized(MAX_ADAPTER, "adapter section")
        value_map = r.sized(MAX_VALUE_MAP, "value map")
        (options,) = r.unpack("<B")
        if options & ~(ZERO_FLAGS_BIT | REGIONS_BIT) or (options & ZERO_FLAGS_BIT and nch != 1):
            raise FormatError("invalid plane options in header")
        section = r.sized(MAX_REGIONS, "classical region section") if options & REGIONS_BIT else b""
        if options & REGIONS_BIT and not section:
            raise FormatError("invalid classical region section in header")
        if section and dcode != DTYPE_CODES["uint8"]:  # the classical codecs hold 8-bit planes only
            raise FormatError("classical regions in a plane of more than 8 bits")
        plane = PlaneHeader(first, nch, patch, name, wid, tuple(lengths), tuple(counts), adapter, value_map,
                            bool(options & ZERO_FLAGS_BIT), section)
        m = plane.model_patches(h, w).size
        if version == 8:  # equal shards of pps patches, the last one the rest
            if n_shards != -(-m // pps):
                raise FormatError("shard count does not match the image size")
            plane = replace(plane, shard_patches=tuple(min(pps, m - i * pps) for i in range(n_shards)))
        elif sum(counts) != m or any(not 1 <= n <= pps for n in counts) or (counts and max(counts) != pps):
            raise FormatError("shard patch counts do not match the image size")
        planes.append(plane)
        next_channel += nch
    if next_channel != c:
        raise FormatError("planes do not cover the channels exactly")
    meta_kind, meta_len = r.unpack("<BI")
    if meta_kind not in METADATA_KINDS or meta_len > MAX_METADATA or (meta_kind == 0) != (meta_len == 0):
        raise FormatError("invalid metadata section in header")
    metadata = r.take(meta_len)
    if meta_kind == METADATA_IMAGE:
        image_metadata.from_bytes(metadata)  # malformed or oversized records: a FormatError now
    if r.pos != body_end:
        raise FormatError("header has trailing bytes")
    header = Header(h, w, c, DTYPE_NAMES[dcode], bits, digest, tuple(planes), meta_kind, metadata, floored, version)
    payload = memoryview(data)[body_end + 4 :]
    if len(payload) != header.payload_len:
        raise FormatError(f"payload is {len(payload)} bytes, header says {header.payload_len}: truncated or padded file")
    if any(n % 4 for p in planes for n in p.shard_lengths):
        raise FormatError("shard length is not a whole number of 32-bit words")
    if zlib.crc32(payload) != payload_crc:
        raise ChecksumError("payload CRC mismatch: the file is corrupt")
    return header, payload
