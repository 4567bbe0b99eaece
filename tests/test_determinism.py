"""The decoder computes exactly the probabilities the encoder used, whatever the threads."""
from __future__ import annotations

import numpy as np
import pytest

import hpac
from conftest import scan_like, smooth_image


class Recorder:
    """Wraps the real range coder and records every call: (symbols, probability tables)."""

    def __init__(self, inner, log):
        self.inner, self.log = inner, log

    def encode(self, symbols, model, params):
        self.log.append((np.array(symbols), np.array(params)))
        return self.inner.encode(symbols, model, params)

    def decode(self, model, params):
        out = self.inner.decode(model, params)
        self.log.append((np.array(out), np.array(params)))
        return out

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


def _what_the_coder_reads(symbols: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """Per coded symbol v of a (n, E) table call: E, the entries' sum before v, entry v, the
    row's total (float64, exact for integer entries) -- all constriction's Categorical(perfect=False)
    reads of a row. (n, 4); a uniform call (tables: the alphabet sizes) as it is."""
    if tables.ndim == 1:
        return np.stack([symbols, tables], 1).astype(np.float64)
    n = np.arange(len(symbols))
    cum = np.cumsum(tables, 1, dtype=np.float64)
    v = symbols.astype(np.int64)
    return np.stack([np.full(len(v), tables.shape[1]), cum[n, v] - tables[n, v], tables[n, v], cum[:, -1]], 1)


def _same_probabilities(enc: list, dec: list) -> None:
    """The same calls, symbols and what the coder reads of each table. The encoder may hand
    the coder rows built only where the symbol reads them (hpac.entropy.afc, version 10); a
    table that is not integer-valued (the zero flags') must be the decoder's exactly."""
    assert len(enc) == len(dec) > 0
    for (sa, a), (sb, b) in zip(enc, dec):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(sa, sb)
        if a.ndim == 2 and not np.array_equal(a, np.round(a)):
            assert np.array_equal(a, b)
        assert np.array_equal(_what_the_coder_reads(sa, a), _what_the_coder_reads(sb, b))


@pytest.mark.parametrize("shape,dtype", [((13, 27, 3), np.uint8), ((21, 10, 1), np.uint16), ((9, 17, 4), np.uint8)])
def test_decoder_sees_identical_tables(recording, tiny_models, shape, dtype):
    img = smooth_image(*shape, dtype=dtype)
    models = list(tiny_models.values())
    data = hpac.encode(img, model=models, threads=1, effort=0)  # effort > 0 also tries adapter codings
    back = hpac.decode(data, model=models, threads=1)
    assert np.array_equal(back.reshape(img.shape), img)
    _same_probabilities(recording["enc"], recording["dec"])


def test_decoder_sees_identical_tables_with_zero_flags(recording, tiny_models):
    """Flag tables (two entries, adaptive counts) and the AFC tables over [1, 2^bits) too."""
    img = scan_like(30, 27)
    models = list(tiny_models.values())
    data = hpac.encode(img, model=models, threads=1, effort=0)
    assert np.array_equal(hpac.decode(data, model=models, threads=1), img)
    assert any(a.ndim == 2 and a.shape[1] == 2 for _, a in recording["enc"])
    _same_probabilities(recording["enc"], recording["dec"])


@pytest.mark.parametrize("blas_threads", [1, 2])
def test_bytes_do_not_depend_on_threads(tiny_models, blas_threads):
    """1 or 2 workers, whatever the caller's BLAS threads (the network's products are BLAS calls)."""
    from threadpoolctl import threadpool_limits

    img = smooth_image(40, 36, 3)
    models = list(tiny_models.values())
    with threadpool_limits(blas_threads):
        a = hpac.encode(img, model=models, threads=1)
        b = hpac.encode(img, model=models, threads=2)
    with threadpool_limits(3 - blas_threads):
        c = hpac.encode(img, model=models, threads=1)
        assert np.array_equal(hpac.decode(a, model=models, threads=2), img)
    assert a == b == c
