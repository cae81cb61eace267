"""UniPC (Zhao et al. 2023, arXiv 2302.04867): multistep predictor (UniP) + corrector (UniC).

Data-prediction form with B(h) = h ("bh1") or e^h - 1 ("bh2"), up to 3rd order, lower order on the
first and last steps, as ComfyUI runs it. ComfyUI treats sigma as a VP model's sigma/alpha ratio and
solves in log-SNR lambda = -log(sigma); written here directly in the sampler's x (the VP scaling
cancels out of every update). A schedule ending at 0 ends at sigma = 0.001 instead, as in ComfyUI.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..contract import Denoiser, NoiseSampler, ShouldStop, StepCallback, StepInfo
from ._common import denoise, step_indices

_FINAL_SIGMA = 0.001


def _update(
    denoiser: Denoiser,
    x: Tensor,
    history: list[tuple[Tensor, Tensor]],
    sigma_t: Tensor,
    order: int,
    *,
    variant: str,
    corrector: bool,
) -> tuple[Tensor, Tensor | None]:
    """One UniPC step from the newest history entry (sigma, x0) to sigma_t using `order` entries.

    Returns the new x and, when the corrector ran, the x0 estimate at sigma_t.
    """
    sigma_0, model_0 = history[-1]
    lam_0 = -sigma_0.log()
    h = -sigma_t.log() - lam_0
    rks: list[float] = []
    diffs: list[Tensor] = []
    for sigma_i, model_i in reversed(history[-order:-1]):
        rk = float((-sigma_i.log() - lam_0) / h)
        rks.append(rk)
        diffs.append((model_i - model_0) / rk)
    rks.append(1.0)

    hh = -float(h)  # float64 on the CPU: the b recurrence nearly cancels for small steps
    b_h = hh if variant == "bh1" else math.expm1(hh)
    phi = math.expm1(hh) / hh - 1
    factorial = 1
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append([rk ** (i - 1) for rk in rks])
        b.append(phi * factorial / b_h)
        factorial *= i + 1
        phi = phi / hh - 1 / factorial
    r = torch.tensor(rows, dtype=torch.float64)
    bv = torch.tensor(b, dtype=torch.float64)

    x_base = (sigma_t / sigma_0) * x - (sigma_t / sigma_0 - 1) * model_0
    if diffs:
        rhos_p = [0.5] if order == 2 else torch.linalg.solve(r[:-1, :-1], bv[:-1]).tolist()
        x_t = x_base - b_h * sum(rho * d for rho, d in zip(rhos_p, diffs))
    else:
        x_t = x_base
    if not corrector:
        return x_t, None
    rhos_c = [0.5] if order == 1 else torch.linalg.solve(r, bv).tolist()
    model_t = denoise(denoiser, x_t, sigma_t)
    correction = sum((rho * d for rho, d in zip(rhos_c[:-1], diffs)), torch.zeros_like(x))
    return x_base - b_h * (correction + rhos_c[-1] * (model_t - model_0)), model_t


def _unipc(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    callback: StepCallback | None,
    should_stop: ShouldStop | None,
    variant: str,
) -> Tensor:
    times = sigmas.clone()
    if times[-1] == 0:
        times[-1] = _FINAL_SIGMA
    steps = len(times) - 1
    max_order = max(1, min(3, steps - 1))
    history: list[tuple[Tensor, Tensor]] = []  # (sigma, x0 estimate), newest last
    for i in step_indices(sigmas, should_stop):
        if i == 0:
            history = [(times[0], denoise(denoiser, x, times[0]))]
            if steps == 1:  # ComfyUI returns the input here; take one first-order step instead
                x, _ = _update(denoiser, x, history, times[1], 1, variant=variant, corrector=False)
        else:
            # step i lands on times[i]; the last one continues to times[-1] without a corrector
            for target in [i, i + 1] if i == steps - 1 else [i]:
                order = i if i < max_order else min(max_order, steps + 1 - target)
                x, model_t = _update(
                    denoiser, x, history, times[target], order, variant=variant, corrector=target < steps
                )
                if model_t is not None:
                    history = (history + [(times[target], model_t)])[-max_order:]
        if callback is not None:
            callback(
                StepInfo(
                    step=i,
                    total_steps=steps,
                    x=x,
                    sigma=float(sigmas[i]),
                    sigma_next=float(sigmas[i + 1]),
                    denoised=history[-1][1],
                )
            )
    return x


def uni_pc(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
) -> Tensor:
    """UniPC with B(h) = h (ComfyUI's "uni_pc")."""
    return _unipc(denoiser, x, sigmas, callback, should_stop, "bh1")


def uni_pc_bh2(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
) -> Tensor:
    """UniPC with B(h) = e^h - 1 (ComfyUI's "uni_pc_bh2")."""
    return _unipc(denoiser, x, sigmas, callback, should_stop, "bh2")
