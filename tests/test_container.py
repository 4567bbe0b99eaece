"""Container parsing and hostile input: every failure is a clear HpacError."""
from __future__ import annotations

import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest

import hpac
from hpac import container, fileformat, shards
from hpac.nn import csi, integer
from hpac.nn.architecture import ModelConfig
from conftest import smooth_image


@pytest.fixture(scope="module", params=["plain", "adapter", "table"])
def small_file(request, tiny_models):
    """Small files: plain, with an adapter section, with a value table."""
    if request.param == "plain":
        img = smooth_image(10, 12, 3)
        data = hpac.encode(img, model=list(tiny_models.values()), effort=0)
    elif request.param == "table":
        img = smooth_image(40, 40, 3) // 8 * 8
        data = hpac.encode(img, model=list(tiny_models.values()), effort=0)
    else:
        img = smooth_image(24, 24, 3)
        data = hpac.encode(img, model=list(tiny_models.values()), effort=2)
    plane = container.read(data)[0].planes[0]
    assert bool(plane.adapter) == (request.param == "adapter") and bool(plane.value_map) == (request.param == "table")
    assert data[8:10] == fileformat.FORMAT_VERSION.to_bytes(2, "little")
    return img, data


def _decode(data, tiny_models):
    return hpac.decode(data, model=list(tiny_models.values()))


def test_header_fields(small_file):
    img, data = small_file
    h, payload = container.read(data)
    assert (h.height, h.width, h.channels, h.dtype, h.bits) == (*img.shape, "uint8", 8)
    assert h.pixel_sha256 == container.pixel_digest(img)
    assert h.planes[0].model_name == "tiny3" and len(h.planes[0].weights_id) == 16
    assert len(payload) == h.payload_len


def test_every_truncation_is_refused(small_file, tiny_models):
    _, data = small_file
    for n in range(len(data)):
        with pytest.raises(hpac.HpacError):
            _decode(data[:n], tiny_models)


def test_every_header_bit_flip_is_refused(small_file, tiny_models):
    _, data = small_file
    h, payload = container.read(data)
    header_len = len(data) - len(payload)
    for i in range(header_len):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(hpac.FormatError):
                _decode(bytes(bad), tiny_models)


def test_payload_corruption_is_detected(small_file, tiny_models):
    _, data = small_file
    h, payload = container.read(data)
    start = len(data) - len(payload)
    rng = np.random.default_rng(0)
    for i in rng.choice(np.arange(start, len(data)), 12, replace=False):
        bad = bytearray(data)
        bad[i] ^= 0x5A
        with pytest.raises(hpac.HpacError):  # ChecksumError (hash) or FormatError (range coder)
            _decode(bytes(bad), tiny_models)


@pytest.mark.parametrize("blob", [b"", b"HPAC", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, bytes(range(256)) * 3])
def test_garbage_is_refused(blob, tiny_models):
    with pytest.raises(hpac.FormatError):
        _decode(blob, tiny_models)


def _forge(h: int, w: int, n_shards: int) -> bytes:
    """A header with a valid CRC claiming a huge image."""
    body = struct.pack("<IIBBBB", h, w, 1, 0, 8, 1) + b"\0" * 32
    body += struct.pack("<BBHI", 0, 1, 64, 64) + struct.pack("<B", 4) + b"evil" + b"\0" * 8
    body += struct.pack("<I", n_shards) + struct.pack("<I", 4) * min(n_shards, 4)
    head = fileformat.MAGIC + struct.pack("<HI", fileformat.FORMAT_VERSION, len(body)) + body
    return head + struct.pack("<I", zlib.crc32(head)) + b"\0" * 16


def test_huge_sizes_refused_before_allocation(tiny_models):
    for h, w in ((1 << 20, 1 << 20), (1 << 30, 2), (0, 5)):
        with pytest.raises(hpac.FormatError):
            _decode(_forge(h, w, 4), tiny_models)


def _with_patches_per_shard(data: bytes, pps: int) -> bytes:
    """``data`` (one plane) with another patches_per_shard and a header CRC to match."""
    at = len(fileformat.MAGIC) + 6 + 12 + 32 + 4 + 1 + 4
    (body_len,) = struct.unpack_from("<I", data, len(fileformat.MAGIC) + 2)
    end = len(fileformat.MAGIC) + 6 + body_len
    out = bytearray(data)
    out[at : at + 4] = struct.pack("<I", pps)
    out[end : end + 4] = struct.pack("<I", zlib.crc32(bytes(out[:end])))
    return bytes(out)


def test_oversized_shards_refused_before_allocation(tiny_models):
    """A shard codes all its patches at once, so its size is bounded in the header: a fuzzed
    file of 116 bytes once made the decoder allocate 8 GB for one shard of 426,000 patches."""
    data = hpac.encode(np.zeros((16, 16), np.uint8), model=tiny_models[1])
    assert container.read(data)[0].planes[0].patches_per_shard == 2
    assert _decode(_with_patches_per_shard(data, 2), tiny_models).shape == (16, 16)
    assert fileformat.max_patches_per_shard(64) * 64 * 64 == fileformat.MAX_SHARD_PIXELS
    for pps in (fileformat.max_patches_per_shard(8) + 1, (1 << 32) - 1):
        with pytest.raises(hpac.FormatError, match="patches per shard"):
            _decode(_with_patches_per_shard(data, pps), tiny_models)


def test_shard_caches_are_bounded_on_both_sides(tiny_models, monkeypatch):
    """The encoder splits shards so that the CSI caches of one stay under
    shards.MAX_SHARD_CACHE_BYTES, and the decoder refuses a file whose shards would not."""
    img = smooth_image(30, 35, 3)
    models = list(tiny_models.values())
    data = hpac.encode(img, model=models)  # 20 patches of 8 x 8: two shards of 10
    per_patch = csi.cache_bytes(tiny_models[3].config, 1)
    assert csi.cache_bytes(tiny_models[3].config, 20) == 20 * per_patch
    monkeypatch.setattr(shards, "MAX_SHARD_CACHE_BYTES", 6 * per_patch)
    with pytest.raises(hpac.FormatError, match="MiB of decoder caches"):
        _decode(data, tiny_models)
    small = hpac.encode(img, model=models)
    assert container.read(small)[0].planes[0].patches_per_shard <= 6
    assert np.array_equal(_decode(small, tiny_models), img)


def test_shards_balance_the_work_of_image_edge_patches():
    """853 x 533 at P = 128 (the dev photos' size): 35 patches, the last row 21 pixels high.
    Equal patch counts (18, 17) gave one worker 17.5 patches' work and the other 10.8; cut
    by work, each shard gets about half, and the counts go in the file (format 9)."""
    cfg = ModelConfig(channels=3, dim=64, blocks=3, kernel=7, mixtures=5, patch=128)
    valid = shards.valid_mask(533, 853, 128)
    sizes = shards.shard_sizes(cfg, valid)
    assert sizes == [15, 20]
    ext = integer.patch_extents(cfg, valid)
    work = ext[:, 0] * ext[:, 1] + shards.PATCH_WORK * 128 * 128
    loads = work[:15].sum(), work[15:].sum()
    assert max(loads) / min(loads) < 1.1
    # a cap of 4 patches a shard (the CSI caches' bound): ten shards, none above it
    capped = shards.shard_sizes(cfg, valid, shards.MAX_SHARD_CACHE_BYTES // 4)
    assert len(capped) == 10 and max(capped) <= 4 and sum(capped) == 35
    assert shards.shard_sizes(cfg, valid[:0]) == []
    assert shards.shard_sizes(cfg, shards.valid_mask(512, 512, 128)) == [8, 8]


def test_shard_patch_counts_are_checked(tiny_models):
    """Format 9 stores each shard's patch count: they must cover the model's patches exactly,
    each at least 1 and at most patches_per_shard, which is the largest of them."""
    data = hpac.encode(smooth_image(16, 24, 1), model=tiny_models[1])  # 6 patches of 8 x 8
    header, payload = container.read(data)
    plane = header.planes[0]
    assert plane.shard_patches == (3, 3) and plane.patches_per_shard == 3
    assert np.array_equal(_decode(data, tiny_models), smooth_image(16, 24, 1)[..., 0])
    for counts in ((2, 3), (4, 3), (0, 6)):
        bad = container.write(replace(header, planes=(replace(plane, shard_patches=counts),)), [bytes(payload)])
        with pytest.raises(hpac.FormatError, match="shard patch counts"):
            _decode(bad, tiny_models)
    with pytest.raises(hpac.FormatError, match="shard patch counts"):  # patches_per_shard above the largest
        _decode(_with_patches_per_shard(data, 4), tiny_models)


def test_unknown_model_is_named(small_file):
    _, data = small_file
    with pytest.raises(hpac.ModelMismatchError, match="tiny3"):
        hpac.decode(data)  # only the catalog models are available


def test_wrong_weights_are_refused(small_file):
    from conftest import make_model

    _, data = small_file
    other = make_model(3, seed=99, name="tiny3")
    with pytest.raises(hpac.ModelMismatchError):
        hpac.decode(data, model=[other])


def test_decompression_bomb_is_refused_before_allocation(tiny_models):
    """A consistent header for a huge image (a few bytes of payload) is refused by the size limit."""
    data = hpac.encode(np.zeros((3, 5), np.uint8), model=tiny_models[1])
    with pytest.raises(hpac.FormatError, match="limit"):
        hpac.decode(data, model=tiny_models[1], max_pixels=14)
    assert hpac.decode(data, model=tiny_models[1], max_pixels=15).shape == (3, 5)
