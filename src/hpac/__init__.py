"""hpac: learned lossless image compression (HPAC: hierarchical parallel AR model)."""
from __future__ import annotations

__version__ = "0.1.0"
