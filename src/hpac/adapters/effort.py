"""The ``--effort`` levels: how much per-image fine-tuning (SARP-FT, :mod:`hpac.adapters.fit`) buys.

Kept free of torch so the CLI can list the levels without loading the network stack.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Effort:
    """Fine-tuning budget of one level."""

    steps: int  # Adam steps T
    epochs: float  # patches trained on in all, in units of the plane's patch count
    rank: int  # LoRA rank of every adapted layer
    lr: float  # Adam learning rate of the adapters (float units)


EFFORTS: dict[int, Effort | None] = {
    0: None,  # the pre-trained model only
    1: Effort(steps=24, epochs=1.5, rank=2, lr=2e-3),
    2: Effort(steps=48, epochs=3.0, rank=2, lr=2e-3),  # same work as 12 steps, smaller steps: -1.4% not -0.8%
    # more work at rank 2, not higher ranks: a rank-4 or rank-8 adapter costs more bits than
    # it gains on held-out natural tiles and unseen CT, and needs a lower rate to stay stable.
    # Held-out tiles, pooled vs effort 0 (docs/sarp-ft.md, session 17): effort 2 0.9864;
    # 3 0.9848 (was 64 steps at rank 4: 0.9859); 4 0.9823 (was 96 steps at rank 8: 0.9867)
    3: Effort(steps=72, epochs=4.5, rank=2, lr=2e-3),
    4: Effort(steps=144, epochs=9.0, rank=2, lr=2e-3),
}
# effort 0 by default since 0.2.0: the one that encodes near JPEG XL e9's time (dev natural,
# BENCHMARKS.md session 23); effort 2 costs about 7x effort 0's time for 2.8% off, for archives
DEFAULT_EFFORT = 0


def effort_of(level: int) -> Effort | None:
    """The budget of ``level``; ValueError for unknown levels."""
    if level not in EFFORTS:
        raise ValueError(f"effort must be one of {sorted(EFFORTS)}, not {level}")
    return EFFORTS[level]
