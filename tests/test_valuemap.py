"""Value maps (hpac.entropy.valuemap): offset and table maps are chosen by rule, travel in the header
round-trip exactly, and corrupt map bytes are refused."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

import hpac
from hpac import container, fileformat
from hpac.entropy import valuemap
from hpac.errors import ChecksumError, FormatError

from conftest import smooth_image


def _kinds(data: bytes) -> list[int]:
    header, _ = container.read(data)
    return [p.value_map[0] if p.value_map else valuemap.IDENTITY for p in header.planes]


def test_rule_picks_the_map_with_fewest_bits():
    full = np.arange(256 * 64).reshape(128, 128) % 256
    assert valuemap.choose(full, 8).kind == valuemap.IDENTITY
    ct = 6000 + np.arange(200 * 200).reshape(200, 200) % 4000  # 14-bit words, a 12-bit range
    m = valuemap.choose(ct, 14)
    assert (m.kind, m.base, m.coding_bits) == (valuemap.OFFSET, 6000, 12)
    levels = (np.arange(100 * 100).reshape(100, 100) % 32) * 8  # 32 grey levels over 0..248
    m = valuemap.choose(levels, 8)
    assert m.kind == valuemap.TABLE and len(m.table) == 32 and m.coding_bits == 8
    assert np.array_equal(m.forward(levels), levels // 8)
    assert valuemap.choose(levels[:5, :5], 8).kind == valuemap.IDENTITY  # the table would cost > 1% of raw
    scan = 1048 + np.arange(200 * 200).reshape(200, 200) % 2400  # 12 bits either way
    assert valuemap.choose(scan, 12).kind == valuemap.IDENTITY
    m = valuemap.choose(scan, 12, gray=True)  # a gray scan is moved to start at 0 regardless
    assert (m.kind, m.base, m.coding_bits) == (valuemap.OFFSET, 1048, 12)
    assert valuemap.choose(full % 255 + 1, 8, gray=True).kind == valuemap.IDENTITY  # 8-bit planes keep their levels


def test_map_bytes_round_trip():
    for m, bits in [(valuemap.ValueMap(valuemap.OFFSET, 9, base=300), 12),
                    (valuemap.ValueMap(valuemap.TABLE, 8, table=np.array([0, 5, 65535])), 16),
                    (valuemap.ValueMap(valuemap.IDENTITY, 10), 10)]:
        back = valuemap.ValueMap.from_bytes(m.to_bytes(bits), bits)
        assert (back.kind, back.coding_bits, back.base) == (m.kind, m.coding_bits, m.base)
        assert (back.table is None) == (m.table is None)
        if m.table is not None:
            assert np.array_equal(back.table, m.table)


BITMAP_8 = zlib.compress(np.packbits(np.arange(256) % 3 == 0).tobytes())  # 86 used values


@pytest.mark.parametrize("blob", [
    b"\x03\x00\x00\x00\x00",                                       # unknown kind
    struct.pack("<BIB", 1, 256, 8),                               # offset base outside 8 bits
    struct.pack("<BIB", 1, 3, 7),                                 # coding bits below 8
    struct.pack("<BIB", 1, 3, 9),                                 # coding bits above the image's
    struct.pack("<BI", 2, 85) + BITMAP_8,                         # K does not match the bitmap
    struct.pack("<BI", 2, 86) + BITMAP_8[:-3],                    # truncated zlib stream
    struct.pack("<BI", 2, 86) + BITMAP_8 + b"x",                  # trailing bytes
    struct.pack("<BI", 2, 1) + zlib.compress(bytes(1 << 20)),     # inflates far past the bitmap
    struct.pack("<BI", 2, 0) + zlib.compress(bytes(32)),          # empty table
    b"\x02\x01",                                                  # truncated
])
def test_corrupt_maps_are_refused(blob):
    with pytest.raises(FormatError):
        valuemap.ValueMap.from_bytes(blob, 8)


def test_symbols_outside_the_map_are_corruption():
    with pytest.raises(ChecksumError):
        valuemap.ValueMap(valuemap.TABLE, 8, table=np.array([1, 4, 9])).inverse(np.array([3]), 8)
    with pytest.raises(ChecksumError):
        valuemap.ValueMap(valuemap.OFFSET, 8, base=200).inverse(np.array([60]), 8)


CASES = [
    ("gray 16 levels", lambda: smooth_image(48, 50, 1)[:, :, 0] // 16 * 16, [valuemap.TABLE]),
    ("rgb 32 levels", lambda: smooth_image(37, 41, 3) // 8 * 8, [valuemap.TABLE]),
    ("rgba, binary alpha", lambda: np.dstack([smooth_image(64, 65, 3),
                                               (smooth_image(64, 65, 1) > 128).astype(np.uint8) * 255]),
     [valuemap.IDENTITY, valuemap.TABLE]),
    ("uint16 offset", lambda: smooth_image(35, 29, 1, np.uint16)[:, :, 0] + 30000, [valuemap.OFFSET]),
    ("uint16 sparse", lambda: (smooth_image(96, 95, 1, np.uint16)[:, :, 0] // 64 * 97).astype(np.uint16), [valuemap.TABLE]),
    ("int16 sparse", lambda: smooth_image(97, 96, 1, np.int16)[:, :, 0] // 32 * 32, [valuemap.TABLE]),
    ("uint16 constant", lambda: np.full((40, 40), 40000, np.uint16), [valuemap.OFFSET]),
]


@pytest.mark.parametrize("name,make,kinds", CASES, ids=[c[0] for c in CASES])
def test_mapped_images_round_trip(name, make, kinds, tiny_models):
    img = make()
    models = list(tiny_models.values())
    data = hpac.encode(img, model=models, threads=2)
    assert _kinds(data) == kinds
    assert data[8:10] == fileformat.FORMAT_VERSION.to_bytes(2, "little")
    back = hpac.decode(data, model=models, threads=1)
    assert back.dtype == img.dtype and np.array_equal(back, img)


def test_table_pays_on_a_sparse_image(monkeypatch):
    # the shipped gray model, 32 grey levels spread over 0..248: coding their ranks must beat
    # coding the raw values (measured on a real 32-level raster: 7.05 -> 4.17 bpsp)
    img = smooth_image(64, 64, 1)[:, :, 0] // 8 * 8
    mapped = hpac.encode(img, effort=0, threads=1)
    assert _kinds(mapped) == [valuemap.TABLE]
    monkeypatch.setattr(valuemap, "choose", lambda sym, bits, gray=False: valuemap.ValueMap(valuemap.IDENTITY, bits))
    raw = hpac.encode(img, effort=0, threads=1)
    assert _kinds(raw) == [valuemap.IDENTITY]
    assert len(mapped) < 0.9 * len(raw)
    assert np.array_equal(hpac.decode(mapped), img) and np.array_equal(hpac.decode(raw), img)


@pytest.mark.parametrize("gap,share,kind", [(300, 0.2, valuemap.TABLE), (300, 0.005, valuemap.OFFSET),
                                            (10, 0.2, valuemap.OFFSET)])
def test_padding_far_below_the_scan_takes_the_table(gap, share, kind):
    """A 12-bit gray plane: padding at 500 (``share`` of it) and dense values from 500 + gap
    to 3500. Table and offset need 12 bits each; only padding far below every other value
    (a CT scan circle's outside) makes the table win, so the air sits right above it."""
    sym = (np.arange(100 * 100) % (3001 - gap) + 500 + gap).reshape(100, 100, 1)
    sym.reshape(-1)[: int(share * sym.size)] = 500
    m = valuemap.choose(sym, 12, gray=True)
    assert m.kind == kind and m.coding_bits == 12
    assert valuemap.choose(sym, 12, gray=False).kind != valuemap.TABLE  # RGB-style planes: unchanged rule
