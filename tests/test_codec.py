"""hpac.codec through the array API: lossless round trips of every size, channel count, depth
and content; shards and threads; arrays it refuses."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hpac
from hpac import fileformat
from conftest import smooth_image

CASES = [
    ("1x1 rgb", lambda: smooth_image(1, 1, 3)),
    ("1x1 gray", lambda: smooth_image(1, 1, 1)[:, :, 0]),
    ("1xN rgb", lambda: smooth_image(1, 37, 3)),
    ("Nx1 gray", lambda: smooth_image(29, 1, 1)[:, :, 0]),
    ("odd rgb", lambda: smooth_image(17, 23, 3)),
    ("odd gray", lambda: smooth_image(19, 9, 1)[:, :, 0]),
    ("rgba", lambda: np.dstack([smooth_image(13, 11, 3), np.full((13, 11, 1), 200, np.uint8)])),
    ("gray+alpha", lambda: smooth_image(9, 14, 2)),
    ("constant rgb", lambda: np.full((12, 20, 3), 77, np.uint8)),
    ("black", lambda: np.zeros((10, 10, 3), np.uint8)),
    ("white gray", lambda: np.full((10, 10), 255, np.uint8)),
    ("noise rgb", lambda: np.random.default_rng(1).integers(0, 256, (16, 18, 3), dtype=np.uint8)),
    ("uint16 gray 12-bit", lambda: smooth_image(15, 21, 1, np.uint16)[:, :, 0]),
    ("uint16 rgb", lambda: smooth_image(11, 10, 3, np.uint16)),
    ("uint16 full range noise", lambda: np.random.default_rng(2).integers(0, 65536, (9, 9), dtype=np.uint16)),
    ("int16 signed", lambda: smooth_image(10, 13, 1, np.int16)[:, :, 0]),
    ("uint16 small values", lambda: (smooth_image(8, 8, 1)[:, :, 0]).astype(np.uint16)),
]


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_roundtrip_tiny_model(name, make, tiny_models):
    img = make()
    data = hpac.encode(img, model=list(tiny_models.values()), threads=1)
    back = hpac.decode(data, model=list(tiny_models.values()))
    assert back.dtype == img.dtype
    assert back.shape == img.shape
    assert np.array_equal(back, img)


def test_many_shards_and_threads(tiny_models, monkeypatch):
    """Several shards (4 patches each), coded by 2 worker threads, decode with 1 and 3."""
    monkeypatch.setattr(fileformat, "MAX_SHARD_PIXELS", 4 * 8 * 8)
    img = smooth_image(33, 41, 3)
    models = list(tiny_models.values())
    data = hpac.encode(img, model=models, threads=2)
    assert data == hpac.encode(img, model=models, threads=1)
    for t in (1, 3):
        assert np.array_equal(hpac.decode(data, model=models, threads=t), img)


def test_trained_model_compresses_constant_far_below_noise():
    img = np.full((64, 64, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert len(hpac.encode(img)) < len(hpac.encode(noise)) / 4


def test_shipped_model_roundtrip_on_sample():
    """The installed default models code the bundled sample (and its gray/alpha variants)."""
    from pathlib import Path

    from hpac.io.readers import read_image

    rgb = read_image(Path(__file__).parent.parent / "samples" / "ihc_crop.png").pixels[:40, :50]
    rgba = np.dstack([rgb, rgb[:, :, :1]])
    for img in (rgb, rgba, rgb[:, :, 1]):
        data = hpac.encode(img)
        assert np.array_equal(hpac.decode(data), img)
    assert 8 * len(hpac.encode(rgb)) / rgb.size < 8.0


def test_rejects_unsupported_arrays():
    with pytest.raises(hpac.UnsupportedImageError):
        hpac.encode(np.zeros((4, 4), np.float32))
    with pytest.raises(hpac.UnsupportedImageError):
        hpac.encode(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(hpac.UnsupportedImageError):
        hpac.encode(np.zeros((0, 4), np.uint8))


_NO_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):  # this interpreter as if torch were not installed
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
sys.meta_path.insert(0, _NoTorch())
"""


def test_without_torch_installed_effort_0_and_decoding_work(tmp_path):
    """torch is an extra (hpac[torch]): without it, effort 0 codes, every file decodes (adapters
    included), and effort >= 1 and training stop with one line that says how to install it."""
    import subprocess
    import sys

    corpus = Path(__file__).parent / "conformance"
    code = _NO_TORCH + (
        "import numpy as np, hpac\n"
        "from hpac.zoo.catalog import load_model_file\n"
        "img = (np.arange(30 * 41 * 3).reshape(30, 41, 3) % 253).astype(np.uint8)\n"
        "assert np.array_equal(hpac.decode(hpac.encode(img, threads=1), threads=1)[..., :3], img)\n"
        f"models = [load_model_file({str(corpus / 'models')!r} + f'/tiny{{c}}.safetensors', f'tiny{{c}}') for c in (1, 3)]\n"
        f"hpac.decode(open({str(corpus / 'tiny_rgb_adapted_v9.hpac')!r}, 'rb').read(), model=models, threads=1)\n"
        "try:\n"
        "    hpac.encode(img, effort=1, threads=1)\n"
        "    raise SystemExit('effort 1 ran without torch')\n"
        "except hpac.HpacError as exc:\n"
        "    assert \"pip install 'hpac[torch]'\" in str(exc), exc\n"
        "from hpac.tools.cli import main\n"
        f"sys.exit(main(['train', '--data', {str(tmp_path)!r}, '--out', {str(tmp_path / 'w.safetensors')!r}]))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    err = r.stderr.decode()
    assert r.returncode == 1 and "hpac train needs PyTorch" in err and "Traceback" not in err, err[-2000:]


def test_effort_0_and_every_decode_never_load_torch():
    """Effort 0, encode and decode, is numpy and numba: neither torch (its import alone took
    1.2 s of every CLI call) nor the adapters load. A file with adapters decodes with the
    merge (hpac.adapters.lora, numpy), never torch or the encoder's fitter (hpac.adapters.fit)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, hpac\n"
            "data = hpac.encode(np.zeros((9, 11, 3), np.uint8), effort=0, threads=1)\n"
            "hpac.decode(data, threads=1)\n"
            "assert not {'torch', 'hpac.adapters.lora', 'hpac.adapters.fit'} & set(sys.modules), sys.modules.keys()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    corpus = Path(__file__).parent / "conformance"
    code = ("import sys, numpy as np, hpac\n"
            "from hpac.zoo.catalog import load_model_file\n"
            f"models = [load_model_file({str(corpus / 'models')!r} + f'/tiny{{c}}.safetensors', f'tiny{{c}}') for c in (1, 3)]\n"
            f"data = open({str(corpus / 'tiny_rgb_adapted_v9.hpac')!r}, 'rb').read()\n"
            "hpac.decode(data, model=models, threads=1)\n"
            "assert 'hpac.adapters.lora' in sys.modules\n"
            "assert not {'torch', 'hpac.adapters.fit'} & set(sys.modules), sys.modules.keys()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
