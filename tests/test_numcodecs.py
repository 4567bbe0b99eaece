"""The hpac numcodecs codec: registry, config, and real zarr arrays (formats 3 and 2), bit-exact."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

numcodecs = pytest.importorskip("numcodecs", reason="needs numcodecs (pip install 'hpac[zarr]')")
zarr = pytest.importorskip("zarr", reason="needs zarr >= 3.1.3 (pip install 'hpac[zarr]')")

from hpac.errors import FormatError, UnsupportedImageError  # noqa: E402
from hpac.integrations.numcodecs_codec import HpacCodec, HpacZarr3, register, STACK_MAGIC  # noqa: E402

from conftest import smooth_image  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3")


def volume(dtype) -> np.ndarray:
    """(Z, Y, X) = (3, 20, 30): a stack of gray planes."""
    return np.stack([smooth_image(20, 30, 1, dtype, seed=z)[:, :, 0] for z in range(3)])


def test_registry_and_config():
    codec = numcodecs.get_codec({"id": "hpac", "effort": 1, "threads": 2})  # found through the entry point
    assert isinstance(codec, HpacCodec) and (codec.effort, codec.threads) == (1, 2)
    assert codec.get_config() == {"id": "hpac", "effort": 1, "threads": 2}
    assert HpacCodec.from_config({"effort": 1, "threads": 2}) == codec
    assert numcodecs.get_codec(HpacCodec().get_config()) == HpacCodec(effort=0, threads=1)
    register()  # the by-hand path is harmless next to the entry points
    assert numcodecs.get_codec({"id": "hpac"}) == HpacCodec()


@pytest.mark.parametrize("shape_dtype", [((20, 30), np.uint8), ((20, 30), np.uint16), ((19, 21, 3), np.uint8),
                                         ((3, 20, 30), np.uint8), ((3, 20, 30), np.uint16)])
def test_codec_roundtrip(shape_dtype):
    shape, dtype = shape_dtype
    arr = volume(dtype) if shape[0] == 3 else smooth_image(shape[0], shape[1], shape[2] if len(shape) == 3 else 1,
                                                            dtype).reshape(shape)
    codec = HpacCodec()
    data = codec.encode(arr)
    assert (data[:8] == STACK_MAGIC) == (shape[0] == 3)
    assert np.array_equal(codec.decode(data).reshape(shape), arr)
    out = np.zeros_like(arr)
    assert codec.decode(data, out=out) is out and np.array_equal(out, arr)


def test_codec_refusals():
    with pytest.raises(UnsupportedImageError, match="2-D or 3-D"):
        HpacCodec().encode(np.zeros((2, 3, 8, 8), np.uint8))
    data = HpacCodec().encode(volume(np.uint8))
    with pytest.raises(FormatError):
        HpacCodec().decode(data[:-1])
    with pytest.raises(FormatError):
        HpacCodec().decode(STACK_MAGIC + b"\0\0\0\0")


def test_hostile_chunks_are_refused_from_their_headers():
    """The headers are read before any pixel is decoded: a stack may not declare more values
    than one chunk may hold, and a chunk must declare the size of the buffer it fills."""
    import struct

    from hpac import container, fileformat

    one = HpacCodec().encode(np.zeros((2, 3), np.uint8))  # 6 values, one small file
    with pytest.raises(FormatError, match="array expects 7"):
        HpacCodec().decode(one, out=np.zeros(7, np.uint8))
    side, p = 1 << 14, 128  # 2^28 values, the most one file holds; a header only, never decoded
    shards = fileformat.n_patches(side, side, p) // fileformat.max_patches_per_shard(p)
    plane = container.PlaneHeader(0, 1, p, "hpac-gray16", "00" * 8, (4,) * shards,
                                  (fileformat.max_patches_per_shard(p),) * shards)
    huge = container.write(container.Header(side, side, 1, "uint8", 8, b"\0" * 32, (plane,)), [b"\0" * 4] * shards)
    assert container.read(huge)[0].height == side
    n = 3
    stack = STACK_MAGIC + struct.pack(f"<{1 + n}I", n, *[len(huge)] * n) + huge * n
    with pytest.raises(FormatError, match="chunk stack declares"):
        HpacCodec().decode(stack)
    with pytest.raises(UnsupportedImageError, match="at most"):
        HpacCodec().encode(np.broadcast_to(np.zeros(1, np.uint8), (2, 1 << 14, 1 << 14)))


def test_zarr3_arrays(tmp_path):
    vol = volume(np.uint16)  # (3, 20, 30) in (2, 16, 30) chunks: the edge chunks are padded by zarr
    path = tmp_path / "v.zarr"
    a = zarr.create_array(path, shape=vol.shape, chunks=(2, 16, 30), dtype=vol.dtype,
                          serializer=HpacZarr3(effort=0), compressors=None)
    a[:] = vol
    assert (path / "c" / "0" / "0" / "0").read_bytes()[:8] == STACK_MAGIC  # stored by hpac, not as raw bytes
    back = zarr.open_array(path, mode="r")  # metadata "numcodecs.hpac" resolves through the entry point
    assert back.metadata.codecs[0].to_dict() == {"name": "numcodecs.hpac", "configuration": {"effort": 0}}
    assert np.array_equal(back[:], vol)
    assert np.array_equal(back[1, 5:17, 7:], vol[1, 5:17, 7:])
    img = smooth_image(20, 30, 3, seed=5)  # RGB (H, W, 3) uint8 in (16, 16, 3) chunks
    b = zarr.create_array(tmp_path / "rgb.zarr", shape=img.shape, chunks=(16, 16, 3), dtype=img.dtype,
                          serializer=HpacZarr3(effort=0), compressors=None)
    b[:] = img
    assert np.array_equal(zarr.open_array(tmp_path / "rgb.zarr", mode="r")[:], img)


def test_zarr2_array(tmp_path):
    img = smooth_image(20, 30, 1)[:, :, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr warns that format 2 is old
        a = zarr.create_array(tmp_path / "g.zarr", shape=img.shape, chunks=(16, 16), dtype=img.dtype,
                              zarr_format=2, compressors=HpacCodec(), filters=None)
        a[:] = img
        assert np.array_equal(zarr.open_array(tmp_path / "g.zarr", mode="r")[:], img)
    assert (tmp_path / "g.zarr" / "0.0").read_bytes()[:8] == b"HPAC\r\n\x1a\n"
