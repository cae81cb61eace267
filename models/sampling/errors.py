"""Typed errors raised by the sampling library."""

from __future__ import annotations


class Interrupted(Exception):  # noqa: N818 - the house-wide name for a cancelled run
    """The caller's `should_stop()` returned True; raised at the start of the step it was checked in."""

    def __init__(self, step: int, total_steps: int) -> None:
        self.step = step
        self.total_steps = total_steps
        super().__init__(f"sampling interrupted before step {step + 1} of {total_steps}")


class SamplingError(ValueError):
    """Bad input to the sampling library: an unknown sampler or scheduler, a bad schedule, shape mismatch."""
