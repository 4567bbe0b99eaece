"""The decoder computes exactly the probabilities the encoder used, whatever the threads."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hpac
from hpac import afc, codec
from conftest import scan_like, smooth_image


class Recorder:
    """Wraps the real range coder and records every probability table it is given."""

    def __init__(self, inner, log):
        self.inner, self.log = inner, log

    def encode(self, symbols, model, params):
        self.log.append(np.array(params))
        return self.inner.encode(symbols, model, params)

    def decode(self, model, params):
        self.log.append(np.array(params))
        return self.inner.decode(model, params)

    def get_compressed(self):
        return self.inner.get_compressed()


@pytest.fixture
def recording(monkeypatch):
    import constriction

    logs = {"enc": [], "dec": []}
    enc_cls = constriction.stream.queue.RangeEncoder
    dec_cls = constriction.stream.queue.RangeDecoder
    monkeypatch.setattr(constriction.stream.queue, "RangeEncoder", lambda: Recorder(enc_cls(), logs["enc"]))
    monkeypatch.setattr(constriction.stream.queue, "RangeDecoder", lambda w: Recorder(dec_cls(w), logs["dec"]))
    return logs


@pytest.mark.parametrize("shape,dtype", [((13, 27, 3), np.uint8), ((21, 10, 1), np.uint16), ((9, 17, 4), np.uint8)])
def test_decoder_sees_identical_tables(recording, tiny_models, shape, dtype):
    img = smooth_image(*shape, dtype=dtype)
    models = list(tiny_models.values())
    data = hpac.encode(img, model=models, threads=1, effort=0)  # effort > 0 also tries adapter codings
    back = hpac.decode(data, model=models, threads=1)
    assert np.array_equal(back.reshape(img.shape), img)
    enc, dec = recording["enc"], recording["dec"]
    assert len(enc) == len(dec) > 0
    for a, b in zip(enc, dec):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b)


def test_decoder_sees_identical_tables_with_zero_flags(recording, tiny_models):
    """Flag tables (two entries, adaptive counts) and the AFC tables over [1, 2^bits) too."""
    img = scan_like(30, 27)
    models = list(tiny_models.values())
    data = hpac.encode(img, model=models, threads=1, effort=0)
    assert np.array_equal(hpac.decode(data, model=models, threads=1), img)
    enc, dec = recording["enc"], recording["dec"]
    assert len(enc) == len(dec) > 0 and any(a.ndim == 2 and a.shape[1] == 2 for a in enc)
    assert all(np.array_equal(a, b) for a, b in zip(enc, dec))


@pytest.mark.parametrize("torch_threads", [1, 2])
def test_bytes_do_not_depend_on_threads(tiny_models, torch_threads):
    img = smooth_image(40, 36, 3)
    models = list(tiny_models.values())
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(torch_threads)
        a = hpac.encode(img, model=models, threads=1)
        b = hpac.encode(img, model=models, threads=2)
    finally:
        torch.set_num_threads(prev)
    torch.set_num_threads(2 if torch_threads == 1 else 1)
    try:
        c = hpac.encode(img, model=models, threads=1)
        assert np.array_equal(hpac.decode(a, model=models, threads=2), img)
    finally:
        torch.set_num_threads(prev)
    assert a == b == c


def test_afc_escape_and_fine_stages_roundtrip():
    """Force every AFC path: escapes (values far from a sharp wrong prediction) and 16-bit bins."""
    import constriction

    torch.manual_seed(0)
    m, k = 200, 3
    logits = torch.randn(m, k)
    for bits, spread in ((8, 0.002), (16, 0.05), (16, 0.0001)):
        mean = torch.rand(m, k) * 2 - 1
        log_s = torch.log(torch.full((m, k), spread))
        sym = torch.randint(0, 1 << bits, (m,))
        sym[:20] = ((mean[:20, 0] + 1) * ((1 << bits) - 1) / 2).round().long()  # some inside the window
        enc = constriction.stream.queue.RangeEncoder()
        afc.code_symbols(enc, logits, mean, log_s, bits, sym)
        dec = constriction.stream.queue.RangeDecoder(enc.get_compressed())
        out = afc.code_symbols(dec, logits, mean, log_s, bits)
        assert torch.equal(out, sym)


def _torch_bin_masses(start: torch.Tensor, step: torch.Tensor | int, n_bins: int, bits: int, w: torch.Tensor,
                      mu: torch.Tensor, s: torch.Tensor, escape: bool, low: int = 0) -> np.ndarray:
    """afc._masses as every release before session 15 computed it, all in torch: the oracle the
    numpy path must equal bit for bit (written out here so that it cannot drift with afc)."""
    unit_step = isinstance(step, int)
    inv = s.reciprocal()
    a = (start.to(torch.float32)[:, None] - 0.5 - mu).mul_(inv)  # z at the first edge, (n, K)
    b = inv if unit_step else step.to(torch.float32)[:, None] * inv  # z increment per bin
    # (n, K, E) layout: the mixture sum runs over a non-inner axis and vectorises over edges
    cdf = torch.addcmul(a[:, :, None], afc._edges(n_bins), b[:, :, None]).sigmoid_().mul_(w[:, :, None])
    big = cdf.sum(1)  # mixture CDF at the edges, (n, E)
    if low == 0:
        big[:, 0].masked_fill_(start <= 0, 0.0)
    big[:, -1].masked_fill_(start + n_bins * step >= (1 << bits), 1.0)
    out = torch.empty(big.shape[0], n_bins + int(escape))
    torch.sub(big[:, 1:], big[:, :-1], out=out[:, :n_bins])
    if escape:
        below = big[:, 0] if low == 0 else big[:, 0] - afc.mass_below(low, w, mu, s)
        out[:, n_bins] = below + (1.0 - big[:, -1])
    # floor: a row whose mass all underflowed (a far-tail bin) must stay normalisable
    out.clamp_(min=1e-30)
    if low != 0:  # rows hold 1 - P(x < low), which can be tiny; constriction refused such rows
        out.div_(out.sum(1, keepdim=True))  # that it takes once they sum to 1
    return out.numpy()


@pytest.mark.parametrize("bits,low", [(8, 0), (8, 1), (12, 0), (16, 1)])
def test_afc_numpy_path_is_the_torch_arithmetic_bit_for_bit(bits, low):
    """The float32 path runs its exactly rounded steps in numpy (afc._units, _windows, _masses);
    every value must equal the all-torch originals (symbol_units, plan_windows, _torch_bin_masses)
    that wrote the files of earlier releases, on strided inputs as the coder passes them,
    over every bucket of both table stages and the escape column."""
    torch.manual_seed(bits + low)
    m, k = 300, 5
    half = ((1 << bits) - 1) / 2
    scale = torch.exp(torch.randn(m, k) * 1.2) * (3.0 if bits == 8 else 40.0)  # symbols
    raw = torch.randn(m, 3, 3 * k)  # (rows, channels, params): one channel's slices are strided
    raw[:, 1, k : 2 * k] = (torch.rand(m, 1) * 2 - 1) + torch.randn(m, k) * scale / half
    raw[:, 1, 2 * k :] = torch.log(scale / half)
    logits, mean, log_s = raw[:, 1, :k] * 2, raw[:, 1, k : 2 * k], raw[:, 1, 2 * k :]
    units = afc._units(logits, mean, log_s, bits)
    units_t = afc.symbol_units(logits, mean, log_s, bits)
    for a, b in zip(units, units_t):
        np.testing.assert_array_equal(a, b.numpy())
    lo, delta, width = afc._windows(*units, bits, low)
    for a, b in zip((lo, delta, width), afc.plan_windows(*units_t, bits, low)):
        np.testing.assert_array_equal(a, b.numpy())
    assert len(np.unique(width)) >= 3 if bits == 8 else len(np.unique(delta)) >= 3

    def same_tables(sel, start, step, n_bins, escape):
        table = afc._masses(start, step, n_bins, bits, *(u[sel] for u in units), escape=escape, low=low)
        rows = [u[torch.from_numpy(sel)] for u in units_t]
        step_t = step if isinstance(step, int) else torch.from_numpy(step)
        np.testing.assert_array_equal(table, _torch_bin_masses(torch.from_numpy(start), step_t, n_bins, bits, *rows,
                                                                escape=escape, low=low))

    for wb in np.unique(width).tolist():  # stage 1
        same_tables(np.flatnonzero(width == wb), lo[width == wb], delta[width == wb], wb, True)
    for db in np.unique(delta[delta > 1]).tolist():  # stage 2: the symbols of the window's first bin
        same_tables(np.flatnonzero(delta == db), lo[delta == db], 1, db, False)


def test_afc_window_never_needs_full_alphabet_for_16_bit():
    w = torch.full((4, 1), 1.0)
    mu = torch.tensor([[100.0], [30000.0], [65000.0], [5.0]])
    s = torch.tensor([[0.5], [40.0], [3000.0], [1e5]])
    lo, delta, width = afc.plan_windows(w, mu, s, 16)
    assert torch.all(width <= afc.MAX_BINS)
    assert torch.all(lo >= 0) and torch.all(lo + width * delta <= 1 << 16)
    assert torch.all((mu[:, 0] >= lo) & (mu[:, 0] < lo + width * delta))


# a real 128-entry stage-2 table (k * 2^-24, k = 0 stored as 1e-30) from a 16-bit MR mosaic on
# which constriction's lazy quantisation gives the last symbol a zero frequency and panics
_REFUSED = "12122104021122110312112131122021210312111221022111311220310212121120131210310212112112131011311120221111211211212012013013130110"


@pytest.mark.parametrize("threads", [1, 2])
def test_a_refused_table_is_a_clear_error(tiny_models, monkeypatch, threads):
    from hpac.errors import CodingError

    k = np.array([int(c) for c in _REFUSED])
    row = np.where(k == 0, np.float32(1e-30), k * np.float32(2.0**-24)).astype(np.float32)
    real = afc.code_symbols

    def refused(coder, logits, mean_n, log_s, bits, sym=None, floored=False, **kw):
        # one extra symbol (127) under the refused table, before each call's own symbols
        if logits.shape[0]:
            table = afc.floor_tables(row[None]) if floored else row[None]
            if sym is not None:
                coder.encode(np.array([127], np.int32), afc.categorical(), table)
            else:
                assert coder.decode(afc.categorical(), table)[0] == 127
        return real(coder, logits, mean_n, log_s, bits, sym, floored, **kw)

    monkeypatch.setattr(afc, "code_symbols", refused)
    img = smooth_image(20, 20, 3)
    # the floor makes the table codable: the encoder falls back to it and writes version 5
    data = codec.encode(img, tiny_models, threads=threads)
    assert data[8:10] == (5).to_bytes(2, "little")
    assert np.array_equal(codec.decode(data, list(tiny_models.values()), threads=threads), img)
    # a table refused even floored is a clear error, not a crash
    monkeypatch.setattr(afc, "floor_tables", lambda probs: probs)
    monkeypatch.setattr(afc, "code_symbols", refused)
    with pytest.raises(CodingError, match="refused a probability table"):
        codec.encode(img, tiny_models, threads=threads)


def test_floored_tables_round_trip_and_differ(tiny_models):
    img = smooth_image(23, 19, 3)
    plain = codec.encode(img, tiny_models, threads=1)
    floored = codec.encode(img, tiny_models, threads=1, floored=True)
    assert floored[8:10] == (5).to_bytes(2, "little") and plain[8:10] == (2).to_bytes(2, "little")
    assert np.array_equal(codec.decode(floored, list(tiny_models.values()), threads=2), img)
    assert floored[-64:] != plain[-64:]  # the floor really changes the tables
    row = afc.floor_tables(np.array([[1.0, 1e-30, 0.5]], np.float32))
    assert row[0, 1] == np.float32(1.5 * afc.TABLE_FLOOR)


def test_arithmetic_fingerprint_is_stable_and_sees_a_one_ulp_change(monkeypatch):
    """The fingerprint (docs/determinism.md) must tell machines apart whose kernels differ in
    the last bit of one activation: the smallest difference that breaks decoding."""
    from hpac.determinism import fingerprint
    import torch.nn.functional as F

    base = fingerprint.__wrapped__()
    assert len(base) == 16 and base == fingerprint.__wrapped__()
    gelu = F.gelu
    monkeypatch.setattr(F, "gelu", lambda x: torch.nextafter(gelu(x), torch.tensor(float("inf"))))
    assert fingerprint.__wrapped__() != base


def test_other_arithmetic_is_reported_as_such(tiny_models, monkeypatch):
    """A decoder whose kernels differ from the encoder's (here GELU 0.1% off) must stop with an
    error that names the arithmetic fingerprint, whichever check trips: the range coder, a
    value no map produces (until session 22 that one said only "corrupt payload"), or the
    pixel hash."""
    import torch.nn.functional as F

    from hpac import valuemap
    from hpac.errors import ChecksumError

    models = list(tiny_models.values())
    wide = np.minimum(smooth_image(14, 11, 1, np.uint16).astype(np.int64) * 4535 // 4095 + 61000, 65535)
    files = [codec.encode(img, {m.config.channels: m for m in models}, threads=1)
             for img in (smooth_image(13, 10, 3), wide.astype(np.uint16))]
    gelu = F.gelu
    monkeypatch.setattr(F, "gelu", lambda x, **kw: gelu(x, **kw) * 1.001)
    for data in files:
        with pytest.raises(ChecksumError, match="arithmetic fingerprint"):
            codec.decode(data, models, threads=1)
    monkeypatch.setattr(F, "gelu", gelu)

    def out_of_range(self, coded, bits):
        raise ChecksumError("decoded values out of range: corrupt payload")

    monkeypatch.setattr(valuemap.ValueMap, "inverse", out_of_range)
    with pytest.raises(ChecksumError, match="out of range: corrupt payload, or this machine.*arithmetic fingerprint"):
        codec.decode(files[1], models, threads=1)
