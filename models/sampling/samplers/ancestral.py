"""Ancestral samplers for flow models (step below the next sigma, then re-noise), and lcm.

The re-noising uses the rectified-flow ancestral step (`rf_ancestral_step`), as ComfyUI does for
CONST model sampling: scale x by alpha_next / alpha_down and add renoise_coeff * noise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..contract import Denoiser, NoiseSampler, ShouldStop, StepCallback
from ._common import denoise, denoise_and_report, require_noise, rf_ancestral_step, step_indices, to_d


def euler_ancestral(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Euler ancestral sampling (k-diffusion's sample_euler_ancestral, rectified-flow form):
    interpolate towards x0 down to sigma_down, then re-noise to sigma_next."""
    noise_sampler = require_noise(noise_sampler, "euler_ancestral")
    for i in step_indices(sigmas, should_stop):
        denoised = denoise_and_report(denoiser, x, sigmas, i, callback)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        sigma_down, alpha_ratio, renoise = rf_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        ratio = sigma_down / sigmas[i]
        x = ratio * x + (1 - ratio) * denoised
        if eta > 0:
            x = alpha_ratio * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


def dpm_2_ancestral(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver-2 midpoint step down to sigma_down, then rectified-flow re-noise to sigma_next."""
    noise_sampler = require_noise(noise_sampler, "dpm_2_ancestral")
    for i in step_indices(sigmas, should_stop):
        denoised = denoise_and_report(denoiser, x, sigmas, i, callback)
        sigma_down, alpha_ratio, renoise = rf_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, denoise(denoiser, x_2, sigma_mid))
            x = x + d_2 * (sigma_down - sigmas[i])
            x = alpha_ratio * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


def dpmpp_2s_ancestral(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver++(2S) (Lu et al. 2022, arXiv 2211.01095) single-step 2nd order with its midpoint
    in half-log-SNR, ancestral rectified-flow re-noising."""
    noise_sampler = require_noise(noise_sampler, "dpmpp_2s_ancestral")
    for i in step_indices(sigmas, should_stop):
        denoised = denoise_and_report(denoiser, x, sigmas, i, callback)
        sigma_down, alpha_ratio, renoise = rf_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            if sigmas[i] == 1.0:  # log-SNR is -inf at sigma 1; ComfyUI takes a fixed midpoint
                sigma_s = torch.full_like(sigmas[i], 0.9999)
            else:
                lam, lam_down = _lambda(sigmas[i]), _lambda(sigma_down)
                sigma_s = ((lam + 0.5 * (lam_down - lam)).exp() + 1) ** -1
            ratio_s = sigma_s / sigmas[i]
            u = ratio_s * x + (1 - ratio_s) * denoised
            denoised_2 = denoise(denoiser, u, sigma_s)
            ratio_down = sigma_down / sigmas[i]
            x = ratio_down * x + (1 - ratio_down) * denoised_2
        if sigmas[i + 1] > 0 and eta > 0:
            x = alpha_ratio * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


def _lambda(sigma: Tensor) -> Tensor:
    return ((1 - sigma) / sigma).log()


def lcm(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
) -> Tensor:
    """Latent Consistency Model sampling (Luo et al. 2023): jump to the x0 estimate, then re-noise it
    to the next sigma with fresh noise (flow noise scaling sigma * n + (1 - sigma) * x0)."""
    noise_sampler = require_noise(noise_sampler, "lcm")
    for i in step_indices(sigmas, should_stop):
        x = denoise_and_report(denoiser, x, sigmas, i, callback)
        if sigmas[i + 1] > 0:
            sigma_next = sigmas[i + 1]
            x = sigma_next * noise_sampler(sigmas[i], sigma_next) + (1 - sigma_next) * x
    return x
