"""The one sampling contract (house style 10): denoisers, samplers, noise samplers and step reports.

A denoiser maps a noisy latent and its noise level to the clean estimate:
`denoiser(x [B, C, h, w], sigma [B]) -> x0 [B, C, h, w]` (same dtype as x). For flow models
x_sigma = (1 - sigma) * x0 + sigma * noise with sigma in [0, 1].

A sampler integrates from `sigmas[0]` to `sigmas[-1]` (usually 0):
`sampler(denoiser, x, sigmas [n+1], *, noise_sampler, callback, should_stop, **options) -> x`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""`(x [B, C, h, w], sigma [B]) -> x0 [B, C, h, w]`."""

NoiseSampler = Callable[[Tensor, Tensor], Tensor]
"""`(sigma, sigma_next) -> standard normal noise shaped like the latent` (k-diffusion's noise_sampler)."""

ShouldStop = Callable[[], bool]


@dataclass(frozen=True, eq=False)
class StepInfo:
    """What a sampler reports once per step, after its first denoiser call of that step.

    `x` is the latent the step started from, `denoised` the x0 estimate at `sigma` (model space),
    `step` counts from 0 to `total_steps - 1`.
    """

    step: int
    total_steps: int
    x: Tensor
    sigma: float
    sigma_next: float
    denoised: Tensor


StepCallback = Callable[[StepInfo], None]


class SamplerFn(Protocol):
    """A sampler: integrates `x` from noise level `sigmas[0]` to `sigmas[-1]`; returns the final latent."""

    def __call__(
        self,
        denoiser: Denoiser,
        x: Tensor,
        sigmas: Tensor,
        *,
        noise_sampler: NoiseSampler | None = None,
        callback: StepCallback | None = None,
        should_stop: ShouldStop | None = None,
    ) -> Tensor: ...
