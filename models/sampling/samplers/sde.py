"""DPM-Solver++ SDE samplers in half-log-SNR lambda = log((1 - sigma) / sigma) (flow form).

A schedule that starts at sigma = 1 (lambda = -inf) starts at percent_to_sigma(1e-4) instead, as in
ComfyUI; pass `model_sampling` so that point matches the model's shift (default: FLUX dev's).
"""

from __future__ import annotations

from torch import Tensor

from ..contract import Denoiser, NoiseSampler, ShouldStop, StepCallback
from ..errors import SamplingError
from ..model_sampling import FlowModelSampling
from ._common import (
    ancestral_step,
    denoise,
    denoise_and_report,
    half_log_snr,
    offset_first_sigma,
    require_noise,
    sigma_of_half_log_snr,
    step_indices,
)


def dpmpp_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 0.5,
    model_sampling: FlowModelSampling | None = None,
) -> Tensor:
    """DPM-Solver++ stochastic 2nd-order single-step sampler (k-diffusion's sample_dpmpp_sde):
    a stochastic sub-step to lambda_s + r*h, then a stochastic full step with the blended x0."""
    if len(sigmas) <= 1:
        return x
    noise_sampler = require_noise(noise_sampler, "dpmpp_sde")
    sigmas = offset_first_sigma(sigmas, model_sampling)
    for i in step_indices(sigmas, should_stop):
        denoised = denoise_and_report(denoiser, x, sigmas, i, callback)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = lambda_t - lambda_s
        lambda_s_1 = lambda_s + r * h
        fac = 1 / (2 * r)
        sigma_s_1 = sigma_of_half_log_snr(lambda_s_1)
        alpha_s = sigmas[i] * lambda_s.exp()
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()

        sd, su = ancestral_step(lambda_s.neg().exp(), lambda_s_1.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        x_2 = (alpha_s_1 / alpha_s) * (-h_).exp() * x - alpha_s_1 * (-h_).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + alpha_s_1 * noise_sampler(sigmas[i], sigma_s_1) * s_noise * su
        denoised_2 = denoise(denoiser, x_2, sigma_s_1)

        sd, su = ancestral_step(lambda_s.neg().exp(), lambda_t.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


def dpmpp_2m_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: str = "midpoint",
    model_sampling: FlowModelSampling | None = None,
) -> Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, arXiv 2211.01095): 2nd-order multistep data prediction
    with SDE noise; `solver_type` "midpoint" or "heun" picks the 2nd-order correction."""
    if solver_type not in ("heun", "midpoint"):
        raise SamplingError(f"solver_type must be 'heun' or 'midpoint', got {solver_type!r}")
    return _dpmpp_multistep_sde(
        denoiser,
        x,
        sigmas,
        noise_sampler=noise_sampler,
        callback=callback,
        should_stop=should_stop,
        eta=eta,
        s_noise=s_noise,
        order=2,
        solver_type=solver_type,
        model_sampling=model_sampling,
        name="dpmpp_2m_sde",
    )


def dpmpp_2m_sde_heun(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    model_sampling: FlowModelSampling | None = None,
) -> Tensor:
    """dpmpp_2m_sde with the Heun correction."""
    return _dpmpp_multistep_sde(
        denoiser,
        x,
        sigmas,
        noise_sampler=noise_sampler,
        callback=callback,
        should_stop=should_stop,
        eta=eta,
        s_noise=s_noise,
        order=2,
        solver_type="heun",
        model_sampling=model_sampling,
        name="dpmpp_2m_sde_heun",
    )


def dpmpp_3m_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    model_sampling: FlowModelSampling | None = None,
) -> Tensor:
    """DPM-Solver++(3M) SDE: 3rd-order multistep data prediction with SDE noise."""
    return _dpmpp_multistep_sde(
        denoiser,
        x,
        sigmas,
        noise_sampler=noise_sampler,
        callback=callback,
        should_stop=should_stop,
        eta=eta,
        s_noise=s_noise,
        order=3,
        solver_type="midpoint",
        model_sampling=model_sampling,
        name="dpmpp_3m_sde",
    )


def _dpmpp_multistep_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None,
    callback: StepCallback | None,
    should_stop: ShouldStop | None,
    eta: float,
    s_noise: float,
    order: int,
    solver_type: str,
    model_sampling: FlowModelSampling | None,
    name: str,
) -> Tensor:
    """The shared DPM-Solver++(2M/3M) SDE loop; 3M uses the 2M update until it has two past steps."""
    if len(sigmas) <= 1:
        return x
    noise_sampler = require_noise(noise_sampler, name)
    sigmas = offset_first_sigma(sigmas, model_sampling)
    denoised_1: Tensor | None = None
    denoised_2: Tensor | None = None
    h: Tensor | None = None
    h_1: Tensor | None = None
    h_2: Tensor | None = None
    for i in step_indices(sigmas, should_stop):
        denoised = denoise_and_report(denoiser, x, sigmas, i, callback)
        if sigmas[i + 1] == 0:
            x = denoised
            h = None
        else:
            lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if order == 3 and h_2 is not None:
                assert h_1 is not None and denoised_1 is not None and denoised_2 is not None
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None and denoised_1 is not None:
                r = h_1 / h
                if order == 3:  # 3M's first multistep update: the 2M form with phi_2
                    phi_2 = h_eta.neg().expm1() / h_eta + 1
                    x = x + (alpha_t * phi_2) * ((denoised - denoised_1) / r)
                elif solver_type == "heun":
                    x = x + alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (
                        denoised - denoised_1
                    )
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - denoised_1)
            if eta > 0 and s_noise > 0:
                noise = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        if order == 3:
            h_1, h_2 = h, h_1
        else:
            h_1 = h if h is not None else h_1
    return x
