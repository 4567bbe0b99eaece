"""The ``--effort`` levels: how much per-image fine-tuning (SARP-FT, :mod:`hpac.adapt`) buys.

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
    # a higher rank needs a lower rate: at rank 4, 2e-3 and 1.4e-3 made some held-out images
    # worse than effort 0 before quantisation, 1e-3 none (docs/sarp-ft.md, session 8)
    3: Effort(steps=64, epochs=4.0, rank=4, lr=1e-3),
    4: Effort(steps=96, epochs=8.0, rank=8, lr=5e-4),
}
DEFAULT_EFFORT = 2


def effort_of(level: int) -> Effort | None:
    """The budget of ``level``; ValueError for unknown levels."""
    if level not in EFFORTS:
        raise ValueError(f"effort must be one of {sorted(EFFORTS)}, not {level}")
    return EFFORTS[level]
