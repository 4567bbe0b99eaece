"""hpac bench --plot: the summary drawn as a PNG (without running the benchmark)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="needs matplotlib (pip install 'hpac[plot]')")

from hpac.tools.bench import plot_summary  # noqa: E402
from hpac.tools.cli import build_parser  # noqa: E402
from hpac.io.readers import read_image  # noqa: E402

SUMMARY = {  # the shape of bench.summarise output
    "natural (8-bit)": {"n": 3, "bpsp": {"hpac": 3.0, "png": 3.5, "webp": 3.2, "jxl_e9": 2.8}},
    "medical (16-bit)": {"n": 2, "bpsp": {"hpac": 6.1, "png": 7.2, "jxl_e9": 5.9}},  # no WebP for 16-bit
}


def test_plot_summary_writes_png(tmp_path):
    path = tmp_path / "bpsp.png"
    plot_summary(SUMMARY, path)
    img = read_image(path).pixels  # a real PNG, decoded by imagecodecs
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img.dtype == np.uint8 and img.std() > 10  # not blank: bars and labels were drawn
    one = tmp_path / "one.png"
    plot_summary(SUMMARY, one, names=["hpac"])
    assert one.stat().st_size < path.stat().st_size  # fewer bars, less to draw


def test_cli_plot_option():
    args = build_parser().parse_args(["bench", "dir", "--plot", "out.png"])
    assert str(args.plot) == "out.png"
