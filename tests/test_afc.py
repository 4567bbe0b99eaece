"""hpac.entropy.afc: integer mixtures -> windowed tables + escape; every stage round-trips, the
tables are the mixture's masses, a table the range coder refuses is a clear error (or floored)."""
from __future__ import annotations

import numpy as np
import pytest

from hpac import codec
from hpac.entropy import afc
from conftest import smooth_image

def _int_mixtures(m: int, k: int, bits: int, spread: float, seed: int = 0):
    """Random integer mixtures (w, mu, S) as hpac.nn.integer.units gives them."""
    rng = np.random.default_rng(seed)
    logits = rng.integers(-3 << 12, 3 << 12, (m, k))
    ls = np.full((m, k), int(np.log(spread) * 4096))
    w, s = afc.mixture(logits, ls, bits)
    mu = rng.integers(0, (1 << bits) << afc.MU_FRAC, (m, k))
    return w, mu, s


def test_afc_escape_and_fine_stages_roundtrip():
    """Force every AFC path: escapes (values far from a sharp wrong prediction) and 16-bit bins."""
    import constriction

    m, k = 200, 3
    for bits, spread in ((8, 0.002), (16, 0.05), (16, 0.0001)):
        w, mu, s = _int_mixtures(m, k, bits, spread)
        sym = np.random.default_rng(bits).integers(0, 1 << bits, m)
        sym[:20] = mu[:20, 0] >> afc.MU_FRAC  # some inside the window
        enc = constriction.stream.queue.RangeEncoder()
        afc.encode_symbols(enc, w, mu, s, bits, sym)
        dec = constriction.stream.queue.RangeDecoder(enc.get_compressed())
        out = afc.decode_symbols(dec, w, mu, s, bits)
        assert np.array_equal(out, sym)


def test_afc_window_never_needs_full_alphabet_for_16_bit():
    one = 1 << afc.MU_FRAC
    w = np.full((4, 1), 1 << afc.W_BITS, np.int64)
    mu = np.array([[100], [30000], [65000], [5]], np.int64) * one
    s = (np.array([[0.5], [40.0], [3000.0], [1e5]]) * one).astype(np.int64)
    lo, delta, width = afc.windows(w, mu, s, 16)
    assert np.all(width <= afc.MAX_BINS)
    assert np.all(lo >= 0) and np.all(lo + width * delta <= 1 << 16)
    assert np.all((mu[:, 0] // one >= lo) & (mu[:, 0] // one < lo + width * delta))


def test_tables_are_the_mixture_masses():
    """An integer table row is the discretised mixture: close to the float logistic mixture's
    bin masses (the tables' precision), ends pinned, the escape entry holds the rest."""
    w, mu, s = _int_mixtures(64, 3, 8, 0.01, seed=4)
    lo, delta, width = afc.windows(w, mu, s, 8)
    order = np.argsort(width, kind="stable")
    rows = 0
    for first, end, table in afc.bin_tables(lo[order], delta[order], width[order], 8, w[order], mu[order],
                                            s[order], escape=True):
        for i, r in enumerate(order[first:end]):
            edges = lo[r] + np.arange(width[r] + 1) * delta[r] - 0.5
            z = (edges[:, None] - mu[r] / 2.0**afc.MU_FRAC) / (s[r] / 2.0**afc.MU_FRAC)
            cdf = (w[r] / 2.0**afc.W_BITS / (1 + np.exp(-z))).sum(1) / (w[r].sum() / 2.0**afc.W_BITS)
            if lo[r] == 0:
                cdf[0] = 0.0
            if lo[r] + width[r] * delta[r] >= 256:
                cdf[-1] = 1.0
            masses = np.diff(cdf)
            got = table[i, :-1] / table[i].sum()
            assert np.abs(got - masses).max() < 2e-4
            assert abs(table[i, -1] / table[i].sum() - (cdf[0] + 1 - cdf[-1])) < 2e-4
            rows += 1
    assert rows == 64


# a real 128-entry stage-2 table (k * 2^-24, k = 0 stored as 1e-30) from a 16-bit MR mosaic on
# which constriction's lazy quantisation gives the last symbol a zero frequency and panics
_REFUSED = "12122104021122110312112131122021210312111221022111311220310212121120131210310212112112131011311120221111211211212012013013130110"


@pytest.mark.parametrize("threads", [1, 2])
def test_a_refused_table_is_a_clear_error(tiny_models, monkeypatch, threads):
    from hpac import container
    from hpac.errors import CodingError

    k = np.array([int(c) for c in _REFUSED])
    row = np.where(k == 0, np.float32(1e-30), k * np.float32(2.0**-24)).astype(np.float32)
    real = afc.decode_symbols

    def refused(coder, w, mu, s, bits, floored=False, **kw):
        # one extra symbol (127) under the refused table, before each call's own symbols
        if w.shape[0]:
            table = afc.floor_tables(row[None]) if floored else row[None]
            assert coder.decode(afc.categorical(), table)[0] == 127
        return real(coder, w, mu, s, bits, floored, **kw)

    real_calls = afc.encode_calls

    def refused_calls(coder, w, mu, s, bits, sy, bounds, floored=False, **kw):
        # the encoder's calls (encode_symbols is one segment), segment by segment, each after the extra symbol
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b > a:
                coder.encode(np.array([127], np.int32), afc.categorical(),
                             afc.floor_tables(row[None]) if floored else row[None])
                real_calls(coder, w[a:b], mu[a:b], s[a:b], bits, sy[a:b], np.array([0, b - a]), floored, **kw)

    monkeypatch.setattr(afc, "decode_symbols", refused)
    monkeypatch.setattr(afc, "encode_calls", refused_calls)
    img = smooth_image(20, 20, 3)
    # the floor makes the table codable: the encoder falls back to it and says so in the file
    data = codec.encode(img, tiny_models, threads=threads)
    assert container.read(data)[0].floored_tables
    assert np.array_equal(codec.decode(data, list(tiny_models.values()), threads=threads), img)
    # a table refused even floored is a clear error, not a crash
    monkeypatch.setattr(afc, "floor_tables", lambda probs: probs)
    with pytest.raises(CodingError, match="refused a probability table"):
        codec.encode(img, tiny_models, threads=threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_other_coding_failures_arrive_as_themselves(tiny_models, monkeypatch, threads):
    """Floored tables cure one failure only, constriction refusing a table. Any other failure
    while coding, in this process or in a forked worker, is not retried and not reported as a
    refused table: a MemoryError stays a MemoryError, and a bug names its own exception."""
    import os

    from hpac.errors import CodingError
    from hpac.parallel import WorkerError

    parent = os.getpid()

    def failing(exc):
        real = afc.encode_calls

        def encode_calls(*args, **kw):
            if threads == 1 or os.getpid() != parent:  # (two threads: the workers' shards, not the warm-up)
                raise exc
            return real(*args, **kw)

        return encode_calls

    img = smooth_image(20, 20, 3)  # nine 8 x 8 patches: shards for two workers
    bug = WorkerError if threads > 1 else ValueError
    for exc, expected in ((MemoryError("no room"), MemoryError), (ValueError("a bug"), bug)):
        monkeypatch.setattr(afc, "encode_calls", failing(exc))
        with pytest.raises(expected, match="no room|ValueError: a bug" if threads > 1 else "no room|a bug") as got:
            codec.encode(img, tiny_models, threads=threads)
        assert not isinstance(got.value, CodingError)


def test_floored_tables_round_trip_and_differ(tiny_models):
    from hpac import container

    img = smooth_image(23, 19, 3)
    plain = codec.encode(img, tiny_models, threads=1)
    floored = codec.encode(img, tiny_models, threads=1, floored=True)
    assert container.read(floored)[0].floored_tables and not container.read(plain)[0].floored_tables
    assert np.array_equal(codec.decode(floored, list(tiny_models.values()), threads=2), img)
    assert floored[-64:] != plain[-64:]  # the floor really changes the tables
    row = afc.floor_tables(np.array([[1.0, 1e-30, 0.5]], np.float32))
    assert row[0, 1] == np.float32(1.5 * afc.TABLE_FLOOR)


def _golden_case(bits: int, log_scale: int, seed: int):
    """Integer mixtures and symbols from integers only (no float on the way: the same on every
    machine); a third of the symbols far from the means (escapes), the rest near them."""
    rng = np.random.default_rng(seed)
    m, k = 240, 3
    w, s = afc.mixture(rng.integers(-3 << 12, 3 << 12, (m, k)), np.full((m, k), log_scale), bits)
    mu = rng.integers(0, (1 << bits) << afc.MU_FRAC, (m, k))
    near = (mu[:, 0] >> afc.MU_FRAC) + rng.integers(-3, 4, m)
    sym = np.where(np.arange(m) % 3 == 0, rng.integers(0, 1 << bits, m), np.clip(near, 0, (1 << bits) - 1))
    return w, mu, s, sym.astype(np.int64)


# sha256 (first 16 hex digits) of the words of _golden_case: exact compressed words for a fixed
# integer model, so any machine whose tables or coder drift fails here, not only on a file; per
# entry rule (True: version 10's, False: that of versions 8 and 9, which their files keep)
GOLDEN = {(8, -20000, 1, True): "c20f2547a5672db5", (16, -12000, 2, True): "37f05ed255ab1b10",
          (8, -20000, 1, False): "9a666690638ba89a", (16, -12000, 2, False): "5ad268a98f50f945"}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_golden_words(case):
    import hashlib

    import constriction

    *mix, cdf_entries = case
    w, mu, s, sym = _golden_case(*mix)
    enc = constriction.stream.queue.RangeEncoder()
    afc.encode_symbols(enc, w, mu, s, case[0], sym, cdf_entries=cdf_entries)
    words = enc.get_compressed()
    dec = constriction.stream.queue.RangeDecoder(words)
    assert np.array_equal(afc.decode_symbols(dec, w, mu, s, case[0], cdf_entries=cdf_entries), sym)
    assert hashlib.sha256(words.astype("<u4").tobytes()).hexdigest()[:16] == GOLDEN[case]


@pytest.mark.parametrize("bits,log_scale,low", [(8, -20000, 0), (8, -30000, 1), (16, -12000, 0), (16, -20000, 1),
                                                (16, -5000, 0)])
def test_the_encoders_rows_code_the_bytes_of_the_full_tables(bits, log_scale, low):
    """Version 10's encoder hands the range coder rows that are zero but where the coded symbol
    reads them (afc._coded_rows); the decoder builds every entry. Run by run, both stages: the
    same words, the same prefix sums before and after each symbol and the same totals (so the
    coder would refuse one exactly where it refuses the other)."""
    import constriction

    w, mu, s, sym = _golden_case(bits, log_scale, bits + low)
    sym = np.maximum(sym, low)
    m = w.shape[0]
    seg = np.repeat(np.arange(4, dtype=np.int64), m // 4)  # four calls, as the encoder batches groups
    _, _, sig, lnw = afc.constants()
    stages = 0
    coarse = None
    for coded in (False, True):
        lo, delta, width, coarse, order, flat, rows, at = afc._coarse_tables(w, mu, s, bits, low, lnw, sig, seg, sym,
                                                                             True, coded)
        fine = afc._fine_tables(coarse, lo, delta, width, w, mu, s, bits, sig, seg, sym, True, coded)
        idx = [coarse[order], (sym - fine[0])[fine[1]]]
        if not coded:
            full = (flat, rows, at, fine[2], fine[3], fine[4], idx)
            continue
        for stage, (f, r, a, got_f, got_r, got_a) in enumerate(((full[0], full[1], full[2], flat, rows, at),
                                                                 (full[3], full[4], full[5], fine[2], fine[3],
                                                                  fine[4]))):
            assert np.array_equal(r, got_r) and np.array_equal(a, got_a)
            for (i, j, table), (_, _, sparse) in zip(afc._tables(f, r.tolist(), a.tolist()),
                                                     afc._tables(got_f, r.tolist(), a.tolist())):
                v = np.asarray(idx[stage][i:j])
                n = np.arange(j - i)
                cum, cum_sparse = np.cumsum(table, 1, dtype=np.float64), np.cumsum(sparse, 1, dtype=np.float64)
                assert np.array_equal(cum[n, -1], cum_sparse[n, -1])
                assert np.array_equal(cum[n, v], cum_sparse[n, v])
                assert np.array_equal(cum[n, v] - table[n, v], cum_sparse[n, v] - sparse[n, v])
                words = []
                for rows_ in (table, sparse):
                    enc = constriction.stream.queue.RangeEncoder()
                    enc.encode(v.astype(np.int32), afc.categorical(), rows_)
                    words.append(enc.get_compressed())
                assert np.array_equal(*words)
                stages |= 1 << stage
    assert stages == 3 or (bits == 8 and stages == 1)  # 8-bit windows rarely need stage 2
