"""Classical regions (hpac.entropy.regions): patches of synthetic content coded by lossless WebP or
JPEG XL inside the file, the model coding the rest; decisions visible, sections validated."""
from __future__ import annotations

from dataclasses import replace

import subprocess
import sys

import numpy as np
import pytest
from conftest import make_model, smooth_image
from PIL import Image, ImageDraw

from hpac import codec, container, fileformat
from hpac.entropy import regions
from hpac.errors import FormatError

P = 32  # tiny models on 32 x 32 patches: a WebP header is small beside a patch


@pytest.fixture(scope="module")
def models():
    return {1: make_model(1, patch=P), 3: make_model(3, patch=P)}


def _page(h: int = 96, w: int = 160, photo: int = 2 * P) -> np.ndarray:
    """A screenshot-like RGB image: text and boxes on white, with a photo-like square of side
    ``photo`` at (0, 0)."""
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    for y in range(4, h, 12):
        d.text((40, y), "fn main() { let x = 42; }", fill=(20, 20, 20))
    d.rectangle((100, 40, 150, 80), fill=(200, 220, 255), outline=(0, 0, 120))
    arr = np.array(im)
    arr[:photo, :photo] = smooth_image(photo, photo, 3, seed=5)
    return arr


def _coded(data: bytes) -> tuple[container.Header, list[np.ndarray]]:
    header, _ = container.read(data)
    return header, [p.classical(header.height, header.width) for p in header.planes]


def test_text_goes_classical_photo_stays_with_the_model(models):
    page = _page()
    data = codec.encode(page, models, threads=1)
    header, chosen = _coded(data)
    photo = np.zeros((3, 5), bool)
    photo[:2, :2] = True
    assert np.array_equal(chosen[0], ~photo.reshape(-1))  # the photo: the model; text, boxes, white: classical
    assert len(header.planes[0].shard_lengths) >= 1
    assert np.array_equal(codec.decode(data, list(models.values()), threads=1), page)
    plain = codec.encode(page, models, threads=1, classical_regions=False)
    assert not any(p.regions for p in container.read(plain)[0].planes)
    assert len(data) < len(plain)


def test_a_plane_mostly_classical_is_classical_throughout(models):
    page = _page(photo=P)  # one photo patch among 15: below the share that keeps the model
    assert regions.MOSTLY <= 14 / 15
    _, chosen = _coded(codec.encode(page, models, threads=1))
    assert chosen[0].all()


def test_a_photo_keeps_every_patch_with_the_model(models):
    img = smooth_image(64, 96, 3)
    data = codec.encode(img, models, threads=1)
    assert not any(c.any() for c in _coded(data)[1])
    assert data == codec.encode(img, models, threads=1, classical_regions=False)


def test_all_classical_planes_and_gray_planes_decode(models):
    page = _page(photo=0)  # no photo: the model codes nothing
    rgba = np.concatenate([page, np.full(page.shape[:2] + (1,), 255, np.uint8)], axis=2)
    data = codec.encode(rgba, models, threads=1)
    header, chosen = _coded(data)
    assert all(c.all() for c in chosen)  # RGB and alpha
    assert all(len(p.shard_lengths) == 0 for p in header.planes)
    assert np.array_equal(codec.decode(data, list(models.values()), threads=1), rgba)
    assert codec.encode(rgba, models, threads=1, effort=2) == data  # nothing left to fit adapters for
    gray = page[:, :, :1].copy()  # gray text: the (random) model may win some patches; any mix decodes
    data = codec.encode(gray, models, threads=1)
    assert _coded(data)[1][0].any()
    assert np.array_equal(codec.decode(data, list(models.values()), threads=1).reshape(gray.shape), gray)


def test_sixteen_bit_planes_are_left_to_the_model(models):
    img = (_page().astype(np.uint16) * 257)[:, :, :1]
    assert not any(c.any() for c in _coded(codec.encode(img, models, threads=1))[1])


def test_hpac_info_lists_the_regions(tmp_path, models):
    page = _page()
    data = codec.encode(page, models, threads=1)
    (tmp_path / "p.hpac").write_bytes(data)
    out = subprocess.run([sys.executable, "-m", "hpac", "info", str(tmp_path / "p.hpac")], capture_output=True,
                         text=True).stdout
    assert "11 of 15 patches WebP lossless" in out or "11 of 15 patches JPEG XL lossless" in out
    grid = subprocess.run([sys.executable, "-m", "hpac", "info", "--regions", str(tmp_path / "p.hpac")],
                          capture_output=True, text=True).stdout
    assert "  MMCCC\n  MMCCC\n  CCCCC\n" in grid


def _with_section(data: bytes, section: bytes) -> bytes:
    header, payload = container.read(data)
    plane = header.planes[0]
    planes = (replace(plane, regions=section),) + header.planes[1:]
    return container.write(container.Header(header.height, header.width, header.channels, header.dtype, header.bits,
                                            header.pixel_sha256, planes, header.metadata_kind, header.metadata,
                                            header.floored_tables), [bytes(payload)])


def test_bad_region_sections_are_clean_errors(models):
    page = _page()
    data = codec.encode(page, models, threads=1)
    section = container.read(data)[0].planes[0].regions
    n = -(-fileformat.n_patches(*page.shape[:2], P) // 8)
    all_patches = np.packbits(np.ones(fileformat.n_patches(*page.shape[:2], P), bool), bitorder="little").tobytes()
    bad = {
        "unknown classical codec": b"\x07" + section[1:],
        "shard patch counts": section[:1] + all_patches + section[1 + n :],  # the model's patches now classical too
        "invalid classical region bitmap": section[:1] + b"\xff" * n + section[1 + n :],  # a padding bit set
        "does not match the image size": section[: 1 + n] + b"RIFF\x00\x00\x00\x00WEBPVP8L",
        "corrupt": section[: 1 + n + 30] + bytes(40),
        "truncated": section[:2],
    }
    for message, sec in bad.items():
        with pytest.raises(FormatError, match=message):
            codec.decode(_with_section(data, sec), list(models.values()), threads=1)
    assert np.array_equal(codec.decode(_with_section(data, section), list(models.values()), threads=1), page)


def test_a_region_section_in_a_16_bit_plane_is_refused(models):
    img = (_page().astype(np.uint16) * 257)[:, :, :1]
    data = codec.encode(img, models, threads=1)
    n = fileformat.n_patches(*img.shape[:2], P)
    section = b"\x01" + np.packbits(np.ones(n, bool), bitorder="little").tobytes() + b"RIFF"
    with pytest.raises(FormatError, match="more than 8 bits"):
        container.read(_with_section(data, section))


def test_flat_shares():
    a = np.zeros((4, 4, 3), np.uint8)
    assert regions.flat_shares(a, 8)[0] == pytest.approx(15 / 16)  # all but the first pixel repeat a neighbour
    noisy = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert regions.flat_shares(noisy, 8)[0] == 0.0
    # 2 x 2 patches of a flat plane: each patch's first pixel has no neighbour inside it
    assert regions.flat_shares(np.zeros((4, 4, 1), np.uint8), 2).tolist() == [0.75] * 4


def test_flat_shares_is_each_patch_alone():
    rng = np.random.default_rng(3)
    for h, w, c, patch in [(37, 53, 3, 8), (20, 9, 1, 16), (64, 64, 4, 32), (1, 1, 3, 8)]:
        v = rng.integers(0, 2, (h, w, c), dtype=np.uint8)
        expect = []
        for r in range(0, h, patch):
            for col in range(0, w, patch):
                t = v[r : r + patch, col : col + patch]
                same = np.zeros(t.shape[:2], bool)
                same[:, 1:] |= (t[:, 1:] == t[:, :-1]).all(axis=2)
                same[1:] |= (t[1:] == t[:-1]).all(axis=2)
                expect.append(same.mean())
        assert regions.flat_shares(v, patch).tolist() == expect
