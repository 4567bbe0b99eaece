"""The .hpac format's constants, in one table: magic, version, option bits, codes and the
hard limits every reader checks before allocating (the layout itself: :mod:`hpac.container`,
docs/format.md). Imports nothing of hpac's: every layer may read it.
"""
from __future__ import annotations

MAGIC = b"HPAC\r\n\x1a\n"
FORMAT_VERSION = 10  # AFC table entries from the floored CDF: the encoder builds only what it codes
READ_VERSIONS = (8, 9, 10)  # 8: the integer network (hpac.nn.integer) and AFC tables, shards of equal
# patch counts; 9: each shard's patch count in the header (the encoder balances the shards' work)
CDF_ENTRIES_SINCE = 10  # versions whose AFC entries are (E_(j+1) >> 23) - (E_j >> 23) + 1 (hpac.entropy.afc)
LAST_RELEASE_OF = {v: "0.1.0" for v in range(2, 8)}  # older versions -> the release that reads them
FLOORED_BIT = 1  # coding_options
ZERO_FLAGS_BIT = 1  # plane_options
REGIONS_BIT = 2  # plane_options: some patches are coded by a classical codec (hpac.entropy.regions)
DTYPE_CODES = {"uint8": 0, "uint16": 1, "int16": 2}
DTYPE_NAMES = {v: k for k, v in DTYPE_CODES.items()}
MAX_SIDE = 1 << 20
MAX_PIXELS = 1 << 28  # 268 Mpx: refuse bigger headers before allocating anything
MAX_PATCH = 1024
MAX_SHARD_PIXELS = 1 << 19  # a shard holds at most this many pixels, or one patch where P x P is more
METADATA_NONE, METADATA_DICOM, METADATA_IMAGE = 0, 1, 2  # metadata_kind: none, a DICOM header, hpac.io.metadata
METADATA_KINDS = {METADATA_NONE: "none", METADATA_DICOM: "DICOM header", METADATA_IMAGE: "image metadata"}
MAX_METADATA = 1 << 26
MAX_ADAPTER = 1 << 22
MAX_VALUE_MAP = 1 << 14
MAX_REGIONS = 1 << 31


def n_patches(height: int, width: int, patch: int) -> int:
    return -(-height // patch) * -(-width // patch)


def too_big(height: int, width: int) -> bool:
    """Whether a height x width image is beyond what the format holds (MAX_PIXELS, MAX_SIDE)."""
    return height * width > MAX_PIXELS or max(height, width) > MAX_SIDE


def max_patches_per_shard(patch: int) -> int:
    """Most P x P patches one shard may hold: MAX_SHARD_PIXELS pixels, and at least one."""
    return max(1, MAX_SHARD_PIXELS // (patch * patch))
