"""Portable arithmetic (hpac.exact, format version 7): accurate, exact where it must be, and the
same bytes whatever kernels this machine's PyTorch, oneDNN and MKL pick."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image as PILImage

from hpac import codec, container, exact
from hpac.catalog import load_catalog_model
from hpac.csi import CSIStepper
from hpac.distribution import nll_bits, normalise

from conftest import SAMPLE, make_model, scan_like, smooth_image


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 5e-6)])
def test_exp_and_sigmoid_are_accurate(dtype, tol):
    x = torch.linspace(-80, 80, 200_001, dtype=dtype)
    ref = torch.exp(x.double())
    assert float(((exact.exp(x).double() - ref) / ref).abs().max()) < tol
    assert float((exact.sigmoid(x).double() - torch.sigmoid(x.double())).abs().max()) < tol


def test_log_gelu_tanh_softmax_and_powers_of_two():
    y = torch.logspace(-300, 300, 20_001, dtype=torch.float64)
    err = (exact.log(y) - torch.log(y)).abs() / torch.log(y).abs().clamp(min=1.0)
    assert float(err.max()) < 1e-15
    x = torch.linspace(-12, 12, 20_001, dtype=torch.float64)
    assert float((exact.gelu(x) - F.gelu(x)).abs().max()) < 3e-7  # erf to 1.5e-7
    assert float((exact.tanh(x) - torch.tanh(x)).abs().max()) < 1e-10
    logits = torch.randn(100, 5, dtype=torch.float64) * 10
    assert torch.allclose(exact.softmax(logits), torch.softmax(logits, -1), rtol=1e-9, atol=1e-15)
    n = torch.arange(1, 70_000)
    assert torch.equal(exact.next_pow2(n), 2 ** torch.ceil(torch.log2(n.double())).long())


def test_depthwise_pieces_are_exact():
    """The float32 depthwise convolution of the three pieces equals the float64 one exactly."""
    torch.manual_seed(0)
    a = exact.act(torch.randn(5, 16, dtype=torch.float64) * 50)
    a[0, 0], a[1, 1] = exact.ACT_LIMIT, -exact.ACT_LIMIT  # the extremes
    hi, mid, lo = exact._pieces(a).double()
    assert torch.equal((hi * 2.0**18 + mid * 2.0**9 + lo) * 2.0**-16, a)
    assert float(hi.abs().max()) <= 512 and float(mid.max()) < 512 and float(lo.max()) < 512 and float(lo.min()) >= 0
    w = torch.randn(16, 1, 7, 7)
    ints, scale, bias = exact._depthwise(w, torch.zeros(16))
    assert float(ints.abs().max()) <= 2**exact.DW_BITS
    # worst case: every tap at the largest piece and weight still sums below 2^24
    taps = int((ints != 0).sum((1, 2, 3)).max())
    assert taps * 512 * 2**exact.DW_BITS < 2**24
    band = torch.randint(-512, 512, (3, 16, 10, 20)).float()
    f32 = F.conv2d(band.contiguous(memory_format=torch.channels_last), ints, groups=16)
    f64 = F.conv2d(band.double(), ints.double(), groups=16)
    assert torch.equal(f32.double(), f64)


def test_exact_stepper_matches_the_float_network():
    """Rounding to the grids costs (almost) nothing: same code length to 1e-4 on real weights
    and a real image (two 48 x 48 patches of the bundled sample; a synthetic gradient is no
    measure: there the gap moved from -0.8e-4 to +2.4e-4 between two releases of the weights,
    against -0.1e-4 .. +0.8e-4 on five crops of the sample)."""
    model = load_catalog_model("hpac-natural").with_patch(48)
    sample = np.asarray(PILImage.open(SAMPLE).convert("RGB"))[:48, :96]
    sym = torch.from_numpy(np.ascontiguousarray(sample)).reshape(48, 2, 48, 3).permute(1, 0, 2, 3).to(torch.int64)
    a, b = CSIStepper(model.net, 2), exact.ExactStepper(model.net, 2)
    bits_a = bits_b = 0.0
    for g in range(a.sched.groups):
        r, c = a.sched.rows[g], a.sched.cols[g]
        pa, pb = a.params(g), b.params(g)
        assert pb.dtype == torch.float64
        xs = sym[:, r, c, :]
        bits_a += float(nll_bits(pa, xs, 8, 3, 5).sum())
        bits_b += float(nll_bits(pb.float(), xs, 8, 3, 5).sum())
        a.write_pixels(g, normalise(xs, 8))
        b.write_pixels(g, exact.normalise(xs, 8))
    assert abs(bits_b / bits_a - 1) < 1e-4


CASES = {
    "rgb_odd": lambda: smooth_image(19, 23, 3),
    "gray_u8": lambda: smooth_image(17, 9, 1),
    "u16_12bit": lambda: smooth_image(20, 13, 1, dtype=np.uint16),
    "i16_zero_flags": lambda: scan_like(24, 21, np.int16, floor=-1024),
    "rgba": lambda: smooth_image(10, 12, 4),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_portable_roundtrip(name, tiny_models):
    img = CASES[name]()
    data = codec.encode(img, tiny_models, threads=1, portable=True)
    header, _ = container.read(data)
    assert header.portable and int.from_bytes(data[8:10], "little") == 7
    back = codec.decode(data, list(tiny_models.values()), threads=2)
    assert np.array_equal(back.reshape(img.shape), img)
    assert data != codec.encode(img, tiny_models, threads=1), "portable and float32 coding are different streams"


def test_portable_with_adapters_and_floored_tables(tiny_models):
    img = smooth_image(32, 24, 3)
    for kw in ({"effort": 1}, {"floored": True}):
        data = codec.encode(img, tiny_models, threads=2, portable=True, **kw)
        assert np.array_equal(codec.decode(data, list(tiny_models.values()), threads=1).reshape(img.shape), img)


def test_version_7_requires_its_option_bit(tiny_models):
    data = bytearray(codec.encode(smooth_image(8, 8, 1), tiny_models, threads=1, portable=True))
    at = 8 + 2 + 4 + 4 + 4 + 3 + 1 + 32 + 4  # magic, version, header_len, h, w, c/dtype/bits/planes, sha, crc
    assert data[at] == container.PORTABLE_BIT
    import zlib

    end = 8 + 2 + 4 + int.from_bytes(data[10:14], "little")
    for bad in (0, container.PORTABLE_BIT | 4):
        data[at] = bad
        data[end : end + 4] = zlib.crc32(bytes(data[:end])).to_bytes(4, "little")
        with pytest.raises(container.FormatError, match="coding options"):
            container.read(bytes(data))


def hashed_model(channels: int):
    """A small model whose weights come from integer hashing, not from torch's random
    generator (whose normal samples differ between kernel choices too)."""
    from hpac.catalog import CodecModel
    from hpac.determinism import hashed_uniform
    from hpac.model import HPACNet, ModelConfig
    from hpac.weights import tensors_hash

    net = HPACNet(ModelConfig(channels=channels, dim=16, blocks=2, mixtures=3, patch=8)).eval()
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.copy_(torch.from_numpy(hashed_uniform(channels * 1000 + i, p.numel()).reshape(p.shape)) * 0.3)
    return CodecModel(f"hashed{channels}", net, tensors_hash(net.state_dict()), {})


_PROBE = """
import hashlib, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import numpy as np
from conftest import scan_like, smooth_image
from test_exact import hashed_model
from hpac import codec
from hpac.catalog import load_catalog_model
models = {{1: hashed_model(1), 3: hashed_model(3)}}
shipped = {{3: load_catalog_model("hpac-natural").with_patch(16)}}
# effort 0: the encoder makes no float decisions, so even its bytes are the same everywhere
files = [codec.encode(smooth_image(21, 19, 3), models, threads=1, portable=True),
         codec.encode(scan_like(23, 17), models, threads=1, portable=True),
         codec.encode(smooth_image(16, 16, 3), shipped, threads=1, portable=True)]
print(hashlib.sha256(b"".join(files)).hexdigest())
# files written by the parent process (SARP-FT adapters included) decode here
for f in sorted(Path({tmp!r}).glob("*.hpac")):
    img = codec.decode(f.read_bytes(), list(models.values()), threads=1)
    assert np.array_equal(img, np.load(f.with_suffix(".npy"))), f.name
"""


def test_portable_files_do_not_depend_on_the_cpu_kernels(tmp_path):
    """Every kernel choice PyTorch, oneDNN and MKL can be forced to here codes the same effort-0
    bytes and decodes the same files (on the session-12 machine each of these settings gave
    float32 coding other bytes). Effort >= 1 files are decoded, not re-encoded: the fit that
    finds their adapters runs in float32 and may choose others on another machine."""
    models = {1: hashed_model(1), 3: hashed_model(3)}
    for name, img, effort in (("adapted", smooth_image(24, 32, 3), 1), ("flags", scan_like(26, 19), 1),
                              ("plain", smooth_image(13, 11, 1), 0)):
        data = codec.encode(img, models, threads=1, portable=True, effort=effort)
        (tmp_path / f"{name}.hpac").write_bytes(data)
        np.save(tmp_path / f"{name}.npy", codec.decode(data, list(models.values()), threads=1))
    settings = [{}, {"ATEN_CPU_CAPABILITY": "default"}, {"ATEN_CPU_CAPABILITY": "avx2"},
                {"ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "MKL_CBWR": "COMPATIBLE"}]
    code = _PROBE.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    digests = set()
    for extra in settings:
        env = dict(__import__("os").environ) | extra
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0, f"{extra}: {run.stderr[-2000:]}"
        digests.add(run.stdout.strip())
    assert len(digests) == 1


def test_portable_adapter_integers():
    """Portable files code adapter integers with a Laplace table from hpac.exact.exp (not
    constriction's QuantizedLaplace, whose exp is the platform's libm): same cost, round trip."""
    from hpac import adapt

    rng = np.random.default_rng(0)
    net = make_model(3, dim=32).net  # the integer counts only need a matching shape
    shapes = adapt.adapter_shapes(net)
    ints = [rng.laplace(0, 3, (o, 2)).round().astype(np.int64) for o, _ in shapes]
    plain, port = adapt.encode_ints(2, 1, ints), adapt.encode_ints(2, 1, ints, portable=True)
    assert abs(len(port) - len(plain)) <= 8
    rank, qstep, back = adapt.decode_ints(net, port, portable=True)
    assert rank == 2 and qstep == adapt.QSTEPS[1] and all(np.array_equal(a, b) for a, b in zip(back, ints))
