"""Zero flags: a point mass at symbol 0 of gray planes, e.g. CT padding."""
from __future__ import annotations

import numpy as np
import pytest

import hpac
from hpac import codec, container, fileformat
from hpac.entropy import afc, zeroflags
from hpac.errors import FormatError
from conftest import scan_like, smooth_image


def _flagged(data: bytes) -> list[bool]:
    return [p.zero_flags for p in container.read(data)[0].planes]


CASES = [
    ("16-bit odd", lambda: scan_like(37, 29)),
    ("8-bit black padding", lambda: scan_like(21, 26, np.uint8, floor=0)),
    ("int16", lambda: scan_like(25, 23, np.int16, floor=-1024)),
    ("gray+alpha planes", lambda: np.dstack([scan_like(33, 21), scan_like(33, 21, floor=0)])),
    ("all zero", lambda: np.zeros((9, 12), np.uint16)),
    ("1x1", lambda: np.zeros((1, 1), np.uint8)),
]


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_flagged_planes_roundtrip(name, make, tiny_models, monkeypatch):
    """Bit-exact through several shards and thread counts; the file says which planes are flagged."""
    monkeypatch.setattr(fileformat, "MAX_SHARD_PIXELS", 4 * 8 * 8)
    img = make()
    models = list(tiny_models.values())
    data = codec.encode(img, tiny_models, threads=2)
    assert all(_flagged(data))
    assert data == codec.encode(img, tiny_models, threads=1)
    for t in (1, 3):
        back = hpac.decode(data, model=models, threads=t)
        assert back.dtype == img.dtype and np.array_equal(back, img)


def test_flags_pay_on_padding(tiny_models):
    """On a padded slice the flags cost far less than the mixture spends on the padding."""
    img = scan_like(64, 64)
    models = list(tiny_models.values())
    flagged = codec.encode(img, tiny_models, threads=1)
    plain = codec.encode(img, tiny_models, threads=1, zero_flags=False)
    assert not any(_flagged(plain)) and len(flagged) < 0.97 * len(plain)
    assert np.array_equal(hpac.decode(plain, model=models), img)


def test_no_flags_where_zeros_are_rare(tiny_models):
    """Planes with under MIN_SHARE zeros (and RGB planes) are not flagged."""
    for img in (smooth_image(20, 30, 1, np.uint16)[:, :, 0], smooth_image(12, 14, 3), np.zeros((8, 8, 3), np.uint8)):
        data = codec.encode(img, tiny_models, threads=1)
        assert not any(_flagged(data))
        assert data == codec.encode(img, tiny_models, threads=1, zero_flags=False)


def test_flags_with_adapters_and_floored_tables(tiny_models):
    img = scan_like(40, 33)
    models = list(tiny_models.values())
    for kwargs in ({"effort": 1}, {"floored": True}):
        data = codec.encode(img, tiny_models, threads=1, **kwargs)
        header, _ = container.read(data)
        assert header.planes[0].zero_flags
        assert header.floored_tables == kwargs.get("floored", False)
        assert np.array_equal(hpac.decode(data, model=models), img)


def test_afc_low_one_codes_the_mixture_without_zero():
    """With low = 1 the tables hold the mass of [1, 2^bits) only, and symbols >= 1 (escapes
    included) round-trip; a stream coded with low = 0 is different."""
    import constriction

    rng = np.random.default_rng(0)
    m, k, bits = 400, 3, 12
    one = 1 << afc.MU_FRAC
    logits = rng.integers(-2 << 12, 2 << 12, (m, k))
    mu = rng.integers(0, 40 * one, (m, k))  # near symbol 0, where low matters
    mu[:100] = 0  # centred on 0: half their mass is there
    mu[::7] = rng.integers(0, (1 << bits) * one, (len(mu[::7]), k))  # and far from it
    ls = rng.integers(-10 << 12, -4 << 12, (m, k))
    w, s = afc.mixture(logits, ls, bits)
    sym = rng.integers(1, 40, m)
    sym[::13] = rng.integers(1, 1 << bits, len(sym[::13]))  # escapes
    lo, delta, width = afc.windows(w, mu, s, bits, low=1)
    assert int(lo.min()) >= 1 and bool(((lo + width * delta) <= (1 << bits)).all())
    ones = np.ones(m, dtype=np.int64)
    eights = np.full(m, 8, np.int64)
    (_, _, table), = afc.bin_tables(ones, ones, eights, bits, w, mu, s, escape=True, low=1)
    (_, _, full), = afc.bin_tables(ones, ones, eights, bits, w, mu, s, escape=True, low=0)  # escape holds x = 0
    below = afc.mass_below(1, w, mu, s)
    np.testing.assert_array_equal(table[:, :-1], full[:, :-1])  # the same bins
    keep = (below > 0.01) & (below < 0.99)  # the escape entry lost exactly the mass below 1
    np.testing.assert_allclose((full[keep, -1] - table[keep, -1]) / full[keep].sum(1), below[keep], rtol=1e-3, atol=1e-6)
    streams = []
    for low in (1, 0):
        enc = constriction.stream.queue.RangeEncoder()
        afc.encode_symbols(enc, w, mu, s, bits, sym, low=low)
        streams.append(enc.get_compressed())
    dec = constriction.stream.queue.RangeDecoder(streams[0])
    assert np.array_equal(afc.decode_symbols(dec, w, mu, s, bits, low=1), sym)
    assert streams[0].nbytes < streams[1].nbytes  # the mass at 0 is no longer paid for


def test_flag_contexts_see_only_coded_real_neighbours():
    """Context counts use W, N, NW, NE inside the patch, and only real pixels."""
    out = np.ones((1, 8, 8, 1), np.int64)
    out[0, :, :4] = 0  # left half 0
    valid = np.ones((1, 8, 8), bool)
    valid[0, :, 0] = False  # column 0 is padding
    rows, cols = np.array([0, 3, 3, 3]), np.array([0, 1, 4, 5])
    pairs = zeroflags.ZeroFlags.neighbour_pairs(out, valid, rows, cols)
    # (r, c) = (0, 0): none; (3, 1): W and NW padding -> n=2 (N, NE), k=2;
    # (3, 4): W, NW zero, N, NE not -> n=4, k=2; (3, 5): none zero -> n=4, k=0
    expect = [(0, 0), (2, 2), (4, 2), (4, 0)]
    assert pairs.tolist() == [n * (n + 1) // 2 + k for n, k in expect]


def test_container_refuses_bad_options(tiny_models, monkeypatch):
    img = scan_like(20, 20)
    good = codec.encode(img, tiny_models, threads=1)
    monkeypatch.setattr(container, "ZERO_FLAGS_BIT", 4)  # an option bit this reader does not know
    bad = codec.encode(img, tiny_models, threads=1)
    monkeypatch.undo()
    container.read(good)
    with pytest.raises(FormatError, match="plane options"):
        container.read(bad)
    header, payload = container.read(good)
    rgb = container.Header(1, 1, 3, "uint8", 8, header.pixel_sha256,
                           (header.planes[0].__class__(0, 3, 8, "tiny3", "00" * 8, (0,), (1,), zero_flags=True),))
    with pytest.raises(FormatError, match="plane options"):
        container.read(container.write(rgb, [b""]))
