"""Per-plane value maps: stored integers <-> the denser symbols the network codes.

Many real images use a small part of their integer range: a CT slice in 14-bit words whose
values sit in [6192, 10684], a classified raster with 32 distinct grey levels. Coding the
raw integers makes the model spread probability over values that never occur. A plane's
map is one of::

    IDENTITY  s -> s
    OFFSET    s -> s - base                  (base = smallest value of the plane)
    TABLE     s -> rank of s among the K values the plane uses (a sorted table)

The encoder picks the map by a fixed rule on the plane's histogram, never by trial coding:
OFFSET when it lowers the significant bits of the range, TABLE when it lowers them further
(``choose``). The map travels in the plane header (docs/format.md, version 4) as bytes:
u8 kind, then OFFSET: u32 base, u8 coding bits; TABLE: u32 K and a zlib-compressed bitmap of the 2^bits
possible values.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import ChecksumError, FormatError

IDENTITY, OFFSET, TABLE = 0, 1, 2
MAX_BYTES = 1 << 14  # a 16-bit bitmap is 8 KiB raw; zlib never grows it past this
MIN_CODING_BITS = 8  # the network and AFC are built for 8..16-bit symbols
MAX_SHARE = 0.01  # a map's header bytes may be at most this share of the plane's raw bytes
PADDING_GAP = 256  # a gray plane's smallest value is padding where the next used one is this far above it
PADDING_SHARE = 0.01  # ... and it fills at least this share of the plane


def _need(x: int) -> int:
    """Bits needed to hold the integers 0..x."""
    return int(x).bit_length()


@dataclass(frozen=True)
class ValueMap:
    """A plane's map. ``coding_bits``: significant bits of the coded symbols (8..16);
    ``base``: OFFSET's smallest value; ``table``: TABLE's (K,) int64 sorted values."""

    kind: int
    coding_bits: int
    base: int = 0
    table: np.ndarray | None = None

    def forward(self, sym: np.ndarray) -> np.ndarray:
        """Stored symbols (any shape, ints in [0, 2^bits)) -> coded symbols, int32."""
        if self.kind == OFFSET:
            return (sym - self.base).astype(np.int32)
        if self.kind == TABLE:
            return np.searchsorted(self.table, sym).astype(np.int32)
        return sym.astype(np.int32)

    def inverse(self, coded: np.ndarray, bits: int) -> np.ndarray:
        """Coded symbols -> stored symbols (int64); values no map can produce mean a corrupt file."""
        coded = coded.astype(np.int64)
        if self.kind == TABLE:
            if coded.size and int(coded.max()) >= len(self.table):
                raise ChecksumError("decoded symbol outside the value table: corrupt payload")
            return self.table[coded]
        if self.kind == OFFSET:
            coded = coded + self.base
            if coded.size and int(coded.max()) >= 1 << bits:
                raise ChecksumError("decoded values out of range: corrupt payload")
        return coded

    def to_bytes(self, bits: int) -> bytes:
        """The header bytes (empty for IDENTITY)."""
        if self.kind == IDENTITY:
            return b""
        if self.kind == OFFSET:
            return struct.pack("<BIB", OFFSET, self.base, self.coding_bits)
        used = np.zeros(1 << bits, dtype=bool)
        used[self.table] = True
        return struct.pack("<BI", TABLE, len(self.table)) + zlib.compress(np.packbits(used).tobytes(), 9)

    @classmethod
    def from_bytes(cls, data: bytes, bits: int) -> "ValueMap":
        """Parse and validate header bytes for a plane of ``bits``-bit values."""
        if not data:
            return cls(IDENTITY, bits)
        if len(data) < 5 or data[0] not in (OFFSET, TABLE):
            raise FormatError("invalid value map in header")
        kind, n = struct.unpack_from("<BI", data)
        if kind == OFFSET:
            if len(data) != 6 or n >= 1 << bits or not MIN_CODING_BITS <= data[5] <= bits:
                raise FormatError("invalid value map in header")
            return cls(OFFSET, data[5], base=n)
        size = (1 << bits) // 8
        inflate = zlib.decompressobj()
        try:
            raw = inflate.decompress(data[5:], size + 1)  # bounded: never inflates past the bitmap
        except zlib.error:
            raise FormatError("value table is corrupt") from None
        if len(raw) != size or not inflate.eof or inflate.unused_data or inflate.unconsumed_tail:
            raise FormatError("value table is corrupt")
        table = np.flatnonzero(np.unpackbits(np.frombuffer(raw, dtype=np.uint8)))
        if not 1 <= n == len(table):
            raise FormatError("value table does not match its size")
        return cls(TABLE, _coding(len(table) - 1), table=table.astype(np.int64))


def _coding(top: int) -> int:
    return max(MIN_CODING_BITS, _need(top))


def choose(sym: np.ndarray, bits: int, gray: bool = False) -> ValueMap:
    """The map for a plane's symbols (ints in [0, 2^bits), any shape): the one whose symbols
    need the fewest significant bits; ties go to the simpler map (IDENTITY, OFFSET, TABLE).

    A single-channel (``gray``) plane of more than 8 bits whose smallest value is above 0 is
    always offset, even where that saves no bit: the high-bit-depth model has learnt where a
    scan's levels sit above its smallest value (air, padding), and a CT slice stored with its
    minimum at 1048 cost 10-14% more bits unshifted (docs/training.md, session 7).

    A gray plane of more than 8 bits whose smallest value is padding (a CT slice's outside
    of the scan circle: at least PADDING_SHARE of the pixels, PADDING_GAP or more levels below
    every other value) takes the table even where it saves no bit: ranks put the scan's
    air right above the padding, where the high-bit-depth model expects it, and the
    pre-trained model coded such slices 1.9-5.3% smaller (docs/training.md, session 11).

    Bits are compared before the 8-bit floor of the coding, so an 8-bit plane that uses 32
    grey levels is coded as 32 dense symbols. A map is used only if its header bytes are at
    most MAX_SHARE of the plane's raw size: on tiny images a table could cost more than it
    saves (and small images keep the files they had before maps existed)."""
    identity = ValueMap(IDENTITY, bits)
    flat = sym.reshape(-1)
    if flat.size == 0:
        return identity
    counts = np.bincount(flat)
    used = np.flatnonzero(counts)
    lo, hi = int(used[0]), int(used[-1])
    padded = (gray and bits > 8 and len(used) > 1 and int(used[1]) - lo >= PADDING_GAP
              and counts[lo] >= PADDING_SHARE * flat.size)
    candidates = []  # fewest bits first
    if _need(len(used) - 1) < _need(hi - lo) or padded:
        candidates.append(ValueMap(TABLE, _coding(len(used) - 1), table=used.astype(np.int64)))
    if _need(hi - lo) < _need(hi) or (lo > 0 and bits > 8 and gray):
        candidates.append(ValueMap(OFFSET, _coding(hi - lo), base=lo))
    budget = MAX_SHARE * flat.size * bits / 8
    return next((m for m in candidates if len(m.to_bytes(bits)) <= budget), identity)
