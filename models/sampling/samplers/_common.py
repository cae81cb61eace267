"""Helpers shared by the samplers: the step loop, reporting, ODE derivative and ancestral steps.

Samplers follow k-diffusion's formulation (Karras et al. 2022): with x0 = denoiser(x, sigma) the
probability-flow ODE is dx/dsigma = (x - x0) / sigma. For a flow model that derivative is exactly
the predicted velocity, so the same solvers apply; only noise injection differs from the
variance-exploding case and uses the rectified-flow forms ComfyUI uses for CONST models.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..contract import Denoiser, NoiseSampler, ShouldStop, StepCallback, StepInfo
from ..errors import Interrupted, SamplingError
from ..model_sampling import FlowModelSampling


def step_indices(sigmas: Tensor, should_stop: ShouldStop | None) -> Iterator[int]:
    """0 .. len(sigmas) - 2, checking `should_stop()` before each step (raises Interrupted)."""
    if sigmas.ndim != 1:
        raise SamplingError(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
    total = len(sigmas) - 1
    for i in range(total):
        if should_stop is not None and should_stop():
            raise Interrupted(i, total)
        yield i


def denoise(denoiser: Denoiser, x: Tensor, sigma: Tensor) -> Tensor:
    """Call the denoiser with a scalar sigma broadcast to the batch: sigma [B]."""
    return denoiser(x, sigma * x.new_ones([x.shape[0]]))


def denoise_and_report(
    denoiser: Denoiser, x: Tensor, sigmas: Tensor, i: int, callback: StepCallback | None
) -> Tensor:
    """The first model call of step i; the step is reported with its x0 estimate."""
    denoised = denoise(denoiser, x, sigmas[i])
    if callback is not None:
        callback(
            StepInfo(
                step=i,
                total_steps=len(sigmas) - 1,
                x=x,
                sigma=float(sigmas[i]),
                sigma_next=float(sigmas[i + 1]),
                denoised=denoised,
            )
        )
    return denoised


def to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """Karras ODE derivative dx/dsigma = (x - x0) / sigma (the velocity, for a flow model)."""
    return (x - denoised) / sigma


def require_noise(noise_sampler: NoiseSampler | None, name: str) -> NoiseSampler:
    if noise_sampler is None:
        raise SamplingError(
            f"sampler {name!r} is stochastic and needs a noise_sampler (see make_noise_sampler)"
        )
    return noise_sampler


def rf_ancestral_step(sigma: Tensor, sigma_next: Tensor, eta: float) -> tuple[Tensor, Tensor, Tensor]:
    """Rectified-flow ancestral step: (sigma_down, alpha_ratio, renoise_coeff).

    Step deterministically down to sigma_down, then x <- alpha_ratio * x + renoise_coeff * noise
    lands back on the marginal at sigma_next; eta = 0 makes it an ODE step (ComfyUI's *_RF samplers).
    """
    sigma_down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
    alpha_next = 1 - sigma_next
    alpha_down = 1 - sigma_down
    # clamped: rounding can leave a tiny negative at eta = 0, where ComfyUI's form gives NaN
    renoise = (sigma_next**2 - sigma_down**2 * alpha_next**2 / alpha_down**2).clamp(min=0) ** 0.5
    return sigma_down, alpha_next / alpha_down, renoise


def ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """Variance-exploding ancestral step (sigma_down, sigma_up) from sigma_from to sigma_to."""
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    sigma_up = torch.minimum(
        sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    )
    return (sigma_to**2 - sigma_up**2) ** 0.5, sigma_up


def half_log_snr(sigma: Tensor) -> Tensor:
    """lambda = log(alpha / sigma) = log((1 - sigma) / sigma) for a flow model."""
    return sigma.logit().neg()


def sigma_of_half_log_snr(lam: Tensor) -> Tensor:
    """Inverse of half_log_snr: sigma = 1 / (1 + e^lambda)."""
    return lam.neg().sigmoid()


def offset_first_sigma(sigmas: Tensor, model_sampling: FlowModelSampling | None) -> Tensor:
    """A schedule starting at sigma >= 1 (log-SNR -inf) starts at percent_to_sigma(1e-4) instead."""
    if len(sigmas) > 1 and sigmas[0] >= 1:
        ms = model_sampling if model_sampling is not None else FlowModelSampling()
        sigmas = sigmas.clone()
        sigmas[0] = ms.percent_to_sigma(1e-4)
    return sigmas
