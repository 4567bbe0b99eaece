"""hpac: learned lossless image compression (HPAC: hierarchical parallel AR model).

Public API: :func:`encode`, :func:`decode`, :func:`encode_file`, :func:`decode_file`,
:func:`read_info` (the metadata a file keeps), and the error types. Importing hpac loads neither torch nor any model.
"""
from __future__ import annotations

from .api import decode, decode_file, encode, encode_file, read_info
from .errors import ChecksumError, FormatError, HpacError, ModelMismatchError, UnsupportedImageError

__version__ = "0.2.0"
__all__ = [
    "encode", "decode", "encode_file", "decode_file", "read_info",
    "HpacError", "FormatError", "ChecksumError", "ModelMismatchError", "UnsupportedImageError",
    "__version__",
]
