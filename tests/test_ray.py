"""Ray Data integration on a local Ray instance: encode_dataset / decode_dataset, bit-exact."""
from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'hpac[ray]'; no wheel for this platform?)")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'hpac[ray]')")

import hpac  # noqa: E402
from hpac.integrations.ray_data import decode_dataset, encode_dataset, HpacDecoder, HpacEncoder  # noqa: E402

from conftest import smooth_image  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's own settings


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level="warning")
    yield
    ray.shutdown()


def test_encode_decode_dataset(local_ray):
    images = [smooth_image(20, 30, 3), smooth_image(17, 25, 3, seed=1), smooth_image(21, 19, 3, seed=2)]  # ragged
    ds = ray.data.from_items([{"name": f"im{i}", "image": img} for i, img in enumerate(images)])
    enc = encode_dataset(ds, batch_size=2).materialize()  # one actor loads the models, codes 2 batches
    rows = sorted(enc.take_all(), key=lambda r: r["name"])
    assert [r["name"] for r in rows] == ["im0", "im1", "im2"]
    for row, img in zip(rows, images):
        assert set(row) == {"name", "hpac", "bpsp"}
        assert np.array_equal(hpac.decode(row["hpac"]), img)
        assert row["bpsp"] == pytest.approx(8 * len(row["hpac"]) / img.size)
    back = sorted(decode_dataset(enc, batch_size=2).take_all(), key=lambda r: r["name"])
    for row, img in zip(back, images):
        assert set(row) == {"name", "image"}
        assert row["image"].dtype == img.dtype and np.array_equal(row["image"], img)


def test_transforms_on_a_batch():
    """The actor classes themselves, on a batch as Ray hands it over (same-shape 16-bit gray)."""
    images = np.stack([smooth_image(20, 30, 1, np.uint16, seed=s)[:, :, 0] for s in range(2)])
    out = HpacEncoder(effort=0)({"image": images, "id": np.array([7, 8])})
    assert sorted(out) == ["bpsp", "hpac", "id"] and out["hpac"].dtype == object
    back = HpacDecoder()(out)
    assert sorted(back) == ["id", "image"] and list(back["id"]) == [7, 8]
    assert back["image"].dtype == np.uint16 and np.array_equal(back["image"], images)
