"""The Pillow plugin in a real Pillow: Image.open / Image.save of .hpac files, bit-exact."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import hpac
import hpac.integrations.pillow  # noqa: F401 - registers the plugin
from hpac.errors import UnsupportedImageError

from conftest import smooth_image

CASES = [  # (Pillow mode, pixels): odd sizes, every mode the plugin maps
    ("L", smooth_image(21, 31, 1)[:, :, 0]),
    ("LA", smooth_image(17, 23, 2, seed=4)),
    ("RGB", smooth_image(19, 29, 3, seed=1)),
    ("RGBA", smooth_image(23, 17, 4, seed=2)),
    ("I;16", smooth_image(20, 33, 1, np.uint16, seed=3)[:, :, 0]),
]


@pytest.mark.parametrize("mode,pixels", CASES, ids=[c[0] for c in CASES])
def test_save_open_roundtrip(tmp_path, mode, pixels):
    im = Image.fromarray(pixels)
    assert im.mode == mode
    path = tmp_path / "x.hpac"
    im.save(path, effort=0)  # the format comes from the registered extension
    assert path.read_bytes()[:8] == b"HPAC\r\n\x1a\n"
    with Image.open(path) as back:
        assert back.format == "HPAC" and back.mode == mode and back.size == im.size
        assert np.array_equal(np.asarray(back), pixels)
    # files written by hpac itself open too
    path.write_bytes(hpac.encode(pixels, effort=0))
    with Image.open(path) as back:
        assert np.array_equal(np.asarray(back), pixels)


def test_mode_i_values(tmp_path):
    signed = smooth_image(18, 25, 1, np.int16)[:, :, 0]
    path = tmp_path / "s.hpac"
    Image.fromarray(signed.astype(np.int32)).save(path, effort=0)
    assert hpac.decode(path.read_bytes()).dtype == np.int16
    with Image.open(path) as back:
        assert back.mode == "I" and np.array_equal(np.asarray(back), signed)
    unsigned = (signed.astype(np.int32) + 2048)  # 0..4095 in mode I is stored as uint16
    Image.fromarray(unsigned).save(path, format="HPAC", effort=0)
    with Image.open(path) as back:
        assert back.mode == "I;16" and np.array_equal(np.asarray(back), unsigned)


def test_refusals(tmp_path):
    with pytest.raises(UnsupportedImageError, match="mode P"):
        Image.new("P", (5, 4)).save(tmp_path / "p.hpac")
    assert not (tmp_path / "p.hpac").exists()  # Pillow removes what a failed save created
    (tmp_path / "rgb16.hpac").write_bytes(hpac.encode(smooth_image(9, 8, 3, np.uint16), effort=0))
    with pytest.raises(UnsupportedImageError, match="no Pillow mode"):
        Image.open(tmp_path / "rgb16.hpac")
    good = hpac.encode(smooth_image(9, 8, 3), effort=0)
    (tmp_path / "bad.hpac").write_bytes(good[:-5] + bytes([good[-5] ^ 1]) + good[-4:])
    with pytest.raises(hpac.ChecksumError):
        Image.open(tmp_path / "bad.hpac")
