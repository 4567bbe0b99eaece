"""The skewed-diagonal group order: which positions of a P x P patch are coded together.

Group ``g`` holds the positions with ``c + 2r = g`` (3P - 2 groups); within a group the
channels go in order (the "3P" parallel scan of DLPR, Bai et al., TPAMI 2024, which HPAC
keeps inside every patch). A masked k x k conv of one group reads only earlier groups (strict) or
earlier groups and its own (inclusive). In coordinates ``v = c + 2r`` (the group) and
``u = r`` its taps lie in a band of the last ``3(k//2) + 1`` groups: :func:`skew_kernel`
rewrites a masked kernel as a kernel over that band, which both the integer network's
export (:mod:`hpac.nn.integer`) and the decoder's stepper (:mod:`hpac.nn.csi`) use.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np


@dataclass(frozen=True)
class GroupSchedule:
    """Static geometry of the skewed-diagonal order for one (P, k).

    Attributes:
        rows, cols: per group, (n_g,) int64 patch coordinates, rows ascending.
        first_row: per group, the first row (the positions are rows first_row .. +n_g-1).
    """

    patch: int
    kernel: int
    rows: tuple[np.ndarray, ...]
    cols: tuple[np.ndarray, ...]
    first_row: tuple[int, ...]

    @property
    def groups(self) -> int:
        return len(self.rows)

    @cached_property
    def flat(self) -> tuple[np.ndarray, ...]:
        """Per group, (n_g,) int64 flat positions r P + c inside a patch, rows ascending."""
        return tuple(r * self.patch + c for r, c in zip(self.rows, self.cols))

    @property
    def reach(self) -> int:
        """Largest |dc + 2 dr| of a kernel tap: how many earlier groups a layer reads."""
        return 3 * (self.kernel // 2)


@lru_cache(maxsize=8)
def group_schedule(patch: int, kernel: int) -> GroupSchedule:
    rows, cols, first = [], [], []
    for g in range(3 * patch - 2):
        r = np.arange(max(0, (g - patch + 2) // 2), min(patch - 1, g // 2) + 1, dtype=np.int64)
        rows.append(r)
        cols.append(g - 2 * r)
        first.append(int(r[0]))
    return GroupSchedule(patch, kernel, tuple(rows), tuple(cols), tuple(first))


def skew_kernel(weight: np.ndarray, strict: bool) -> np.ndarray:
    """(O, I, k, k) masked conv kernel -> (O, I, H, k) band kernel over skewed rows.

    Band row ``a`` holds the taps with ``dc + 2 dr = a - reach`` (inclusive: H = reach + 1,
    the last row is the current group) or ``a - reach`` for a < reach (strict: H = reach).
    Band column ``b`` is ``dr + k//2``.
    """
    o, i, k, _ = weight.shape
    p = k // 2
    reach = 3 * p
    h = reach if strict else reach + 1
    out = np.zeros((o, i, h, k), dtype=weight.dtype)
    for dr in range(-p, p + 1):
        for dc in range(-p, p + 1):
            s = dc + 2 * dr
            if (s < 0) if strict else (s <= 0):
                out[:, :, s + reach, dr + p] = weight[:, :, dr + p, dc + p]
    return out
