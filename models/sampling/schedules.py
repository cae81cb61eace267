"""Noise schedules: `(model_sampling, steps) -> sigmas [steps + 1]` (float32, descending, ending in 0).

Each is computed as ComfyUI computes it for a flow model sampling (comfy/samplers.py and
k-diffusion's get_sigmas_*), in ComfyUI's float32 arithmetic, so the same name and step count give
the same sigmas. Names and order are those of the KSampler `scheduler` input.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .errors import SamplingError
from .model_sampling import FlowModelSampling

SchedulerFn = Callable[[FlowModelSampling, int], Tensor]


def _as_sigmas(values: list[float]) -> Tensor:
    return torch.tensor(values, dtype=torch.float32)


def simple(ms: FlowModelSampling, steps: int) -> Tensor:
    """Every (len(table) / steps)-th table sigma from the top: the BFL schedule at fixed shift."""
    table = ms.sigma_table()
    stride = len(table) / steps
    return _as_sigmas([float(table[-(1 + int(k * stride))]) for k in range(steps)] + [0.0])


def _normal(ms: FlowModelSampling, steps: int, sgm: bool) -> Tensor:
    table = ms.sigma_table()
    start, end = ms.timestep(table[-1]), ms.timestep(table[0])
    append_zero = True
    if sgm:
        timesteps = torch.linspace(float(start), float(end), steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0.0, abs_tol=1e-5):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(float(start), float(end), steps)
    sigmas = [float(ms.sigma(ts)) for ts in timesteps]
    return _as_sigmas(sigmas + [0.0] if append_zero else sigmas)


def normal(ms: FlowModelSampling, steps: int) -> Tensor:
    """Timesteps uniform between timestep(sigma_max) and timestep(sigma_min), mapped through sigma().

    For a shifted flow model the end points are already shifted, so the shift applies twice.
    """
    return _normal(ms, steps, sgm=False)


def sgm_uniform(ms: FlowModelSampling, steps: int) -> Tensor:
    """`normal` with steps + 1 timesteps and the last one dropped (SGM's uniform spacing)."""
    return _normal(ms, steps, sgm=True)


def karras(ms: FlowModelSampling, steps: int, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022) eq. 5: uniform in sigma^(1/rho) from sigma_max to sigma_min."""
    ramp = torch.linspace(0, 1, steps)
    min_inv_rho = ms.sigma_min ** (1 / rho)
    max_inv_rho = ms.sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def exponential(ms: FlowModelSampling, steps: int) -> Tensor:
    """Uniform in log sigma from sigma_max to sigma_min."""
    sigmas = torch.linspace(math.log(ms.sigma_max), math.log(ms.sigma_min), steps).exp()
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def ddim_uniform(ms: FlowModelSampling, steps: int) -> Tensor:
    """Every (len(table) // steps)-th table sigma from index 1 upwards, reversed.

    As in ComfyUI this can give more than `steps` steps when the table length is not a multiple.
    """
    table = ms.sigma_table()
    index = 1
    if math.isclose(float(table[index]), 0.0, abs_tol=1e-5):
        steps += 1
        sigmas: list[float] = []
    else:
        sigmas = [0.0]
    stride = max(len(table) // steps, 1)
    while index < len(table):
        sigmas.append(float(table[index]))
        index += stride
    return _as_sigmas(sigmas[::-1])


def beta(ms: FlowModelSampling, steps: int, alpha: float = 0.6, beta: float = 0.6) -> Tensor:
    """Table sigmas at the Beta(alpha, beta) quantiles of 1 - k/steps (Lee et al. 2024, arXiv 2407.12173).

    Consecutive duplicate table indices are dropped, so short tables can give fewer steps.
    """
    from scipy import stats  # deferred: importing scipy.stats costs ~0.3 s and only this scheduler needs it

    table = ms.sigma_table()
    last_index = len(table) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    indices = np.rint(stats.beta.ppf(quantiles, alpha, beta) * last_index)
    sigmas: list[float] = []
    previous = -1.0
    for index in indices:
        if index != previous:
            sigmas.append(float(table[int(index)]))
        previous = index
    return _as_sigmas(sigmas + [0.0])


def linear_quadratic(
    ms: FlowModelSampling, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> Tensor:
    """Mochi's schedule: the first half linear up to `threshold_noise`, then quadratic to 1 (x sigma_max)."""
    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        if linear_steps is None:
            linear_steps = steps // 2
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quadratic_coef = step_diff / (linear_steps * quadratic_steps**2)
        linear_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps**2)
        const = quadratic_coef * (linear_steps**2)
        quadratic = [quadratic_coef * (i**2) + linear_coef * i + const for i in range(linear_steps, steps)]
        schedule = [1.0 - v for v in linear + quadratic + [1.0]]
    return _as_sigmas(schedule) * torch.tensor(ms.sigma_max, dtype=torch.float32)


def kl_optimal(ms: FlowModelSampling, steps: int) -> Tensor:
    """Uniform in arctan(sigma) from sigma_max to sigma_min (AUTOMATIC1111 PR 15608's KL-optimal)."""
    if steps == 1:  # ComfyUI divides 0 by 0 here; one step goes straight from sigma_max to 0
        return _as_sigmas([ms.sigma_max, 0.0])
    frac = torch.arange(steps, dtype=torch.float32).div_(steps - 1)
    sigmas = frac.new_zeros(steps + 1)
    sigmas[:-1] = (frac * math.atan(ms.sigma_min) + (1 - frac) * math.atan(ms.sigma_max)).tan_()
    return sigmas


SCHEDULERS: dict[str, SchedulerFn] = {
    "simple": simple,
    "sgm_uniform": sgm_uniform,
    "karras": karras,
    "exponential": exponential,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": kl_optimal,
}
SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULERS)

# KSampler adds a step and drops the second-to-last sigma for these samplers.
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


def calculate_sigmas(ms: FlowModelSampling, scheduler: str, steps: int) -> Tensor:
    """Sigmas [steps + 1] (float32) of the named scheduler."""
    fn = SCHEDULERS.get(scheduler)
    if fn is None:
        raise SamplingError(f"unknown scheduler {scheduler!r}; known: {', '.join(SCHEDULER_NAMES)}")
    if steps < 1:
        raise SamplingError(f"steps must be >= 1, got {steps}")
    return fn(ms, steps)


def denoise_sigmas(ms: FlowModelSampling, scheduler: str, steps: int, denoise: float = 1.0) -> Tensor:
    """BasicScheduler / KSampler `denoise`: the last steps + 1 sigmas of an int(steps / denoise) schedule.

    denoise <= 0 gives an empty tensor (nothing to sample: the input latent comes back unchanged).
    """
    if denoise > 0.9999:
        return calculate_sigmas(ms, scheduler, steps)
    if denoise <= 0.0:
        return torch.zeros(0, dtype=torch.float32)
    return calculate_sigmas(ms, scheduler, int(steps / denoise))[-(steps + 1) :]


def ksampler_sigmas(
    ms: FlowModelSampling, scheduler: str, steps: int, *, sampler: str, denoise: float = 1.0
) -> Tensor:
    """The sigmas ComfyUI's KSampler uses: `denoise_sigmas`, plus dpm_2's extra step whose
    second-to-last sigma is dropped."""
    if sampler not in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
        return denoise_sigmas(ms, scheduler, steps, denoise)

    def discarding(n: int) -> Tensor:
        sigmas = calculate_sigmas(ms, scheduler, n + 1)
        return torch.cat([sigmas[:-2], sigmas[-1:]])

    if denoise > 0.9999:
        return discarding(steps)
    if denoise <= 0.0:
        return torch.zeros(0, dtype=torch.float32)
    return discarding(int(steps / denoise))[-(steps + 1) :]


def slice_sigmas(
    sigmas: Tensor,
    *,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
) -> Tensor | None:
    """KSamplerAdvanced's start/end steps; None means "return the input latent unchanged"."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step >= len(sigmas) - 1:
            return None
        sigmas = sigmas[start_step:]
    return sigmas
