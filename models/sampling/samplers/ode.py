"""Single-step ODE samplers: euler, heun, dpm_2, and the linear multistep lms."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ..contract import Denoiser, NoiseSampler, ShouldStop, StepCallback
from ._common import denoise, denoise_and_report, step_indices, to_d


def euler(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
) -> Tensor:
    """Euler steps on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without churn)."""
    for i in step_indices(sigmas, should_stop):
        denoised = denoise_and_report(denoiser, x, sigmas, i, callback)
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


def heun(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
) -> Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 2); an Euler step into sigma = 0."""
    for i in step_indices(sigmas, should_stop):
        denoised = denoise_and_report(denoiser, x, sigmas, i, callback)
        d = to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], denoise(denoiser, x_2, sigmas[i + 1]))
            x = x + (d + d_2) / 2 * dt
    return x


def dpm_2(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
) -> Tensor:
    """DPM-Solver-2 style midpoint steps, midpoint at the geometric mean of the sigmas
    (Lu et al. 2022 / k-diffusion's sample_dpm_2); an Euler step into sigma = 0."""
    for i in step_indices(sigmas, should_stop):
        denoised = denoise_and_report(denoiser, x, sigmas, i, callback)
        d = to_d(x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, denoise(denoiser, x_2, sigma_mid))
            x = x + d_2 * (sigmas[i + 1] - sigmas[i])
    return x


def lms_coefficient(order: int, t: np.ndarray, i: int, j: int) -> float:
    """Adams-Bashforth weight of the derivative at t[i - j]: the integral over [t[i], t[i+1]] of the
    Lagrange basis polynomial through t[i], ..., t[i - order + 1] that is 1 at t[i - j]."""
    if order - 1 > i:
        raise ValueError(f"order {order} too high for step {i}")
    others = [float(t[i - k]) for k in range(order) if k != j]
    denominator = float(np.prod([float(t[i - j]) - o for o in others])) if others else 1.0
    basis = np.polynomial.Polynomial.fromroots(others) if others else np.polynomial.Polynomial([1.0])
    antiderivative = (basis / denominator).integ()
    return float(antiderivative(float(t[i + 1])) - antiderivative(float(t[i])))


def lms(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
    order: int = 4,
) -> Tensor:
    """Linear multistep (variable-step Adams-Bashforth in sigma, up to `order` past derivatives);
    the last step to sigma = 0 returns the x0 estimate (k-diffusion's sample_lms)."""
    t = sigmas.detach().cpu().numpy()
    history: list[Tensor] = []
    for i in step_indices(sigmas, should_stop):
        denoised = denoise_and_report(denoiser, x, sigmas, i, callback)
        history.append(to_d(x, sigmas[i], denoised))
        if len(history) > order:
            history.pop(0)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            current = min(i + 1, order)
            weights = [lms_coefficient(current, t, i, j) for j in range(current)]
            x = x + sum(w * d for w, d in zip(weights, reversed(history)))
    return x
