"""Zero flags (format version 6): a point mass at symbol 0 of gray planes, e.g. CT padding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hpac
from hpac import afc, codec, container, zeroflags
from hpac.errors import FormatError
from conftest import scan_like, smooth_image


def _version(data: bytes) -> int:
    return int.from_bytes(data[8:10], "little")


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
    """Bit-exact through several shards and thread counts; the file says version 6."""
    monkeypatch.setattr(container, "MAX_SHARD_PIXELS", 4 * 8 * 8)
    img = make()
    models = list(tiny_models.values())
    data = codec.encode(img, tiny_models, threads=2)
    assert _version(data) == 6
    header, _ = container.read(data)
    assert all(p.zero_flags for p in header.planes)
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
    assert _version(plain) < 6 and len(flagged) < 0.97 * len(plain)
    assert np.array_equal(hpac.decode(plain, model=models), img)


def test_no_flags_where_zeros_are_rare(tiny_models):
    """Planes with under MIN_SHARE zeros (and RGB planes) keep the files of earlier releases."""
    for img in (smooth_image(20, 30, 1, np.uint16)[:, :, 0], smooth_image(12, 14, 3), np.zeros((8, 8, 3), np.uint8)):
        data = codec.encode(img, tiny_models, threads=1)
        assert _version(data) < 6
        assert data == codec.encode(img, tiny_models, threads=1, zero_flags=False)


def test_flags_with_adapters_and_floored_tables(tiny_models):
    img = scan_like(40, 33)
    models = list(tiny_models.values())
    for kwargs in ({"effort": 1}, {"floored": True}):
        data = codec.encode(img, tiny_models, threads=1, **kwargs)
        header, _ = container.read(data)
        assert _version(data) == 6 and header.planes[0].zero_flags
        assert header.floored_tables == kwargs.get("floored", False)
        assert np.array_equal(hpac.decode(data, model=models), img)


def test_afc_low_one_codes_the_mixture_without_zero():
    """With low = 1 the tables hold the mass of [1, 2^bits) only, and symbols >= 1 (escapes
    included) round-trip; a stream coded with low = 0 is different."""
    import constriction

    g = torch.Generator().manual_seed(0)
    m, k, bits = 400, 3, 12
    logits = torch.randn(m, k, generator=g)
    mean = torch.rand(m, k, generator=g) * 0.02 - 1.0  # near symbol 0, where low matters
    mean[:100] = -1.0  # centred on 0: half their mass is there
    mean[::7] = torch.rand(m // 7 + 1, k, generator=g) * 2 - 1  # and far from it
    log_s = torch.rand(m, k, generator=g) * 6 - 10
    sym = torch.randint(1, 40, (m,), generator=g)
    sym[::13] = torch.randint(1, 1 << bits, (len(sym[::13]),), generator=g)  # escapes
    w, mu, s = afc.symbol_units(logits, mean, log_s, bits)
    lo, delta, width = afc.plan_windows(w, mu, s, bits, low=1)
    assert int(lo.min()) >= 1 and bool(((lo + width * delta) <= (1 << bits)).all())
    one, rows = np.ones(m, dtype=np.int64), (w.numpy(), mu.numpy(), s.numpy())
    table = afc._masses(one, 1, 8, bits, *rows, escape=True, low=1)
    full = afc._masses(one, 1, 8, bits, *rows, escape=True, low=0)  # start 1: same bins, escape holds x = 0
    below = afc.mass_below(1, w, mu, s).numpy()
    np.testing.assert_allclose(table.sum(1), 1.0, rtol=1e-5)
    keep = below < 0.99  # rows with some mass above 0 (else both are floors)
    np.testing.assert_allclose(table[keep, :-1] * (1.0 - below[keep, None]), full[keep, :-1], rtol=1e-3, atol=1e-9)
    streams = []
    for low in (1, 0):
        enc = constriction.stream.queue.RangeEncoder()
        afc.code_symbols(enc, logits, mean, log_s, bits, sym, low=low)
        streams.append(enc.get_compressed())
    dec = constriction.stream.queue.RangeDecoder(streams[0])
    assert torch.equal(afc.code_symbols(dec, logits, mean, log_s, bits, low=1), sym)
    assert streams[0].nbytes < streams[1].nbytes  # the mass at 0 is no longer paid for


def test_flag_contexts_see_only_coded_real_neighbours():
    """Context counts use W, N, NW, NE inside the patch, and only real pixels."""
    out = torch.ones(1, 8, 8, 1, dtype=torch.int64)
    out[0, :, :4] = 0  # left half 0
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    valid[0, :, 0] = False  # column 0 is padding
    rows, cols = torch.tensor([0, 3, 3, 3]), torch.tensor([0, 1, 4, 5])
    pairs = zeroflags.ZeroFlags.neighbour_pairs(out, valid, rows, cols)
    # (r, c) = (0, 0): none; (3, 1): W and NW padding -> n=2 (N, NE), k=2;
    # (3, 4): W, NW zero, N, NE not -> n=4, k=2; (3, 5): none zero -> n=4, k=0
    expect = [(0, 0), (2, 2), (4, 2), (4, 0)]
    assert pairs.tolist() == [n * (n + 1) // 2 + k for n, k in expect]


def test_container_refuses_bad_options(tiny_models, monkeypatch):
    img = scan_like(20, 20)
    good = codec.encode(img, tiny_models, threads=1)
    monkeypatch.setattr(container, "ZERO_FLAGS_BIT", 2)  # an option bit this reader does not know
    bad = codec.encode(img, tiny_models, threads=1)
    monkeypatch.undo()
    container.read(good)
    with pytest.raises(FormatError, match="plane options"):
        container.read(bad)
    header, payload = container.read(good)
    rgb = container.Header(1, 1, 3, "uint8", 8, header.pixel_sha256,
                           (header.planes[0].__class__(0, 3, 8, 1, "tiny3", "00" * 8, (0,), zero_flags=True),))
    with pytest.raises(FormatError, match="plane options"):
        container.read(container.write(rgb, [b""]))
