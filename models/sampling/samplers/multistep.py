"""Multistep ODE samplers: dpmpp_2m, ipndm, ipndm_v and deis (one model call per step)."""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from ..contract import Denoiser, NoiseSampler, ShouldStop, StepCallback
from ._common import denoise_and_report, step_indices, to_d


def dpmpp_2m(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095): 2nd-order multistep exponential
    integrator in t = -log(sigma) on the data prediction; first and last steps are 1st order."""
    old_denoised: Tensor | None = None
    for i in step_indices(sigmas, should_stop):
        denoised = denoise_and_report(denoiser, x, sigmas, i, callback)
        t, t_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised
        else:
            r = (t - sigmas[i - 1].log().neg()) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


# Adams-Bashforth weights for equal steps, newest derivative first (orders 1-4).
_AB_WEIGHTS = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def ipndm(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
    max_order: int = 4,
) -> Tensor:
    """Improved PNDM (Zhang & Chen 2023, DEIS paper; zju-pi diff-solvers): Adams-Bashforth in sigma
    with fixed equal-step weights, warming up from order 1; the last step to 0 returns x0."""
    return _adams_bashforth(denoiser, x, sigmas, callback, should_stop, max_order, variable_step=False)


def ipndm_v(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
    max_order: int = 4,
) -> Tensor:
    """iPNDM with variable-step Adams-Bashforth weights from the actual sigma spacing."""
    return _adams_bashforth(denoiser, x, sigmas, callback, should_stop, max_order, variable_step=True)


def _adams_bashforth(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    callback: StepCallback | None,
    should_stop: ShouldStop | None,
    max_order: int,
    *,
    variable_step: bool,
) -> Tensor:
    if not 1 <= max_order <= 4:
        raise ValueError(f"max_order must be 1..4, got {max_order}")
    s = [float(v) for v in sigmas]
    history: list[Tensor] = []  # past derivatives, newest last
    for i in step_indices(sigmas, should_stop):
        denoised = denoise_and_report(denoiser, x, sigmas, i, callback)
        d = to_d(x, sigmas[i], denoised)
        order = min(max_order, i + 1)
        if sigmas[i + 1] == 0:
            x_next = denoised
        else:
            weights = _variable_ab_weights(s, i, order) if variable_step else _AB_WEIGHTS[order - 1]
            derivs = [d, *reversed(history[-(order - 1) :])] if order > 1 else [d]
            x_next = x + (sigmas[i + 1] - sigmas[i]) * sum(w * g for w, g in zip(weights, derivs))
        history.append(d)
        if len(history) > max_order - 1:
            history.pop(0)
        x = x_next
    return x


def _variable_ab_weights(s: list[float], i: int, order: int) -> tuple[float, ...]:
    """iPNDM-v weights (newest first) for steps h_n = s[i+1] - s[i], h_n_k = s[i-k+1] - s[i-k]."""
    if order == 1:
        return (1.0,)
    h_n = s[i + 1] - s[i]
    h_n_1 = s[i] - s[i - 1]
    if order == 2:
        return ((2 + h_n / h_n_1) / 2, -(h_n / h_n_1) / 2)
    h_n_2 = s[i - 1] - s[i - 2]
    temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
    if order == 3:
        return (
            (2 + h_n / h_n_1) / 2 + temp1,
            -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1,
            temp1 * h_n_1 / h_n_2,
        )
    h_n_3 = s[i - 2] - s[i - 3]
    ratio = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))
    temp2 = (
        (
            (1 - h_n / (3 * (h_n + h_n_1))) / 2
            + (1 - h_n / (2 * (h_n + h_n_1))) * h_n / (6 * (h_n + h_n_1 + h_n_2))
        )
        * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2))
        / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3))
    )
    return (
        (2 + h_n / h_n_1) / 2 + temp1 + temp2,
        -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + h_n_1 / h_n_2 + ratio) * temp2,
        temp1 * h_n_1 / h_n_2 + (h_n_1 / h_n_2 + ratio * (1 + h_n_2 / h_n_3)) * temp2,
        -temp2 * ratio * h_n_1 / h_n_2,
    )


# DEIS maps sigma to the time of a VP-SDE whose EDM sigma spans [0.002, 80] over t in [1e-3, 1].
_VP_SIGMA_MIN, _VP_SIGMA_MAX, _VP_EPS = 0.002, 80.0, 1e-3
_VP_BETA_D = 2 * (math.log(_VP_SIGMA_MIN**2 + 1) / _VP_EPS - math.log(_VP_SIGMA_MAX**2 + 1)) / (_VP_EPS - 1)
_VP_BETA_MIN = math.log(_VP_SIGMA_MAX**2 + 1) - 0.5 * _VP_BETA_D
_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(48)


def _vp_time(sigma: np.ndarray) -> np.ndarray:
    return (np.sqrt(_VP_BETA_MIN**2 + 2 * _VP_BETA_D * np.log(sigma**2 + 1)) - _VP_BETA_MIN) / _VP_BETA_D


def deis_coefficients(sigmas: np.ndarray, max_order: int) -> list[tuple[float, ...]]:
    """DEIS "tab" weights (Zhang & Chen 2023, arXiv 2204.13902): for step i with order p, weight j is
    the integral over sigma in [sigmas[i], sigmas[i+1]] of the Lagrange basis polynomial, in VP time,
    through the last p step times that is 1 at step i - j. Gauss-Legendre quadrature in float64."""
    s = np.asarray(sigmas, dtype=np.float64)
    taus = _vp_time(s)
    out: list[tuple[float, ...]] = []
    for i in range(len(s) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            out.append(())
            continue
        a, b = s[i], s[i + 1]
        nodes = (b - a) / 2 * _GAUSS_NODES + (a + b) / 2
        weights = (b - a) / 2 * _GAUSS_WEIGHTS
        tau = _vp_time(nodes)
        prev = [taus[i - k] for k in range(order)]
        coeffs = []
        for j in range(order):
            basis = np.ones_like(tau)
            for k in range(order):
                if k != j:
                    basis *= (tau - prev[k]) / (prev[j] - prev[k])
            coeffs.append(float(np.sum(weights * basis)))
        out.append(tuple(coeffs))
    return out


def deis(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
    max_order: int = 3,
) -> Tensor:
    """DEIS multistep exponential-integrator sampler ("tab" mode), Euler on the first step and into 0."""
    if not 1 <= max_order <= 4:
        raise ValueError(f"max_order must be 1..4, got {max_order}")
    coefficients = deis_coefficients(sigmas.detach().cpu().double().numpy(), max_order)
    history: list[Tensor] = []
    for i in step_indices(sigmas, should_stop):
        denoised = denoise_and_report(denoiser, x, sigmas, i, callback)
        d = to_d(x, sigmas[i], denoised)
        order = 1 if sigmas[i + 1] <= 0 else min(max_order, i + 1)
        if order == 1:
            x_next = x + (sigmas[i + 1] - sigmas[i]) * d
        else:
            derivs = [d, *reversed(history[-(order - 1) :])]
            x_next = x + sum(c * g for c, g in zip(coefficients[i], derivs))
        history.append(d)
        if len(history) > max_order - 1:
            history.pop(0)
        x = x_next
    return x
