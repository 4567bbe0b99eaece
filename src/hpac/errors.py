"""Every failure hpac reports on purpose is an :class:`HpacError`.

The CLI catches this one type, prints its one-line message and exits non-zero; anything
else escaping is a bug.
"""
from __future__ import annotations


class HpacError(Exception):
    """Base class of all errors hpac raises deliberately.

    ``option`` names the API keyword argument that would change the outcome (``max_pixels``,
    ``model``, ``force``, ``jpeg_pixels``): the message speaks of the API, and the command line
    adds its own flag for it (:data:`hpac.tools.cli.FLAGS`)."""

    exit_code = 1

    def __init__(self, message: str = "", option: str | None = None):
        super().__init__(message)
        self.option = option


class FormatError(HpacError):
    """The bytes are not a valid .hpac file (bad magic, truncated, corrupt header...)."""

    exit_code = 3


class ChecksumError(FormatError):
    """A CRC or the decoded-pixel hash did not match: the file is corrupt or the decoding
    machine computed different probabilities than the encoder (see docs/determinism.md)."""

    exit_code = 4


class ModelMismatchError(HpacError):
    """The file needs a model (name + weights hash) this installation does not have."""

    exit_code = 5


class UnsupportedImageError(HpacError):
    """The image cannot be coded (dtype, channel count, size, or unreadable input)."""

    exit_code = 6


class CodingError(HpacError):
    """The range coder refused a probability table while encoding. Known limitation: a symbol
    whose float probability is below ~1e-7 of its table's total can get a zero frequency
    (seen once, on a 1.8 Mpx 16-bit MR mosaic); no file is written."""


def require_torch(purpose: str):
    """The torch module, imported for ``purpose``; where it is not installed, an HpacError that
    says what needs it and how to get it (coding at effort 0 and decoding never do)."""
    try:
        import torch
    except ImportError:
        raise HpacError(f"{purpose} needs PyTorch, which is not installed: pip install 'hpac[torch]' "
                        "(effort 0 and decoding do not need it)") from None
    return torch
