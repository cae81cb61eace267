"""Learning-rate schedule: a pure function of the step (no scheduler object to save or restore)."""

from __future__ import annotations

import math


def lr_at(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    schedule: str = "constant",
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Linear warmup from base_lr / warmup_steps to base_lr over `warmup_steps` steps, then
    constant, linear decay or cosine decay to `min_lr_ratio * base_lr` at `total_steps`.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    floor = base_lr * min_lr_ratio
    if schedule == "linear":
        return floor + (base_lr - floor) * (1.0 - progress)
    if schedule == "cosine":
        return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")
