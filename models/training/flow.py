"""Flow-matching training objective for FLUX: timestep sampling, noising, losses.

x_t = (1 - t) x0 + t noise; the model predicts the velocity v = noise - x0 (flux-formats §6.1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

BASE_TOKENS, MAX_TOKENS = 256, 4096
BASE_SHIFT, MAX_SHIFT = 0.5, 1.15


def resolution_mu(latent_h: int, latent_w: int) -> float:
    """FLUX's resolution-dependent shift mu: linear in image tokens (latent / 2 per side)."""
    tokens = math.ceil(latent_h / 2) * math.ceil(latent_w / 2)
    return BASE_SHIFT + (tokens - BASE_TOKENS) * (MAX_SHIFT - BASE_SHIFT) / (MAX_TOKENS - BASE_TOKENS)


def time_shift(t: Tensor, alpha: float) -> Tensor:
    """alpha t / (1 + (alpha - 1) t) (= e^mu / (e^mu + 1/t - 1) with alpha = e^mu)."""
    return alpha * t / (1 + (alpha - 1) * t)


def sample_timesteps(
    n: int,
    gen: torch.Generator,
    *,
    method: str,
    latent_hw: tuple[int, int],
    sigmoid_scale: float = 1.0,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    discrete_flow_shift: float = 3.1582,
) -> Tensor:
    """n flow times in (0, 1), float32, drawn from `gen`.

    uniform: U(0, 1); sigmoid: sigmoid(scale * N(0, 1)); logit_normal: sigmoid(N(mean, std));
    shift: sigmoid sample pushed through `time_shift` with `discrete_flow_shift`;
    flux_shift: the same with alpha = e^mu(resolution) (1024^2: ~3.16, 512^2: ~1.88).
    """
    if method == "uniform":
        t = torch.rand(n, generator=gen)
    elif method == "logit_normal":
        t = torch.sigmoid(torch.randn(n, generator=gen) * logit_std + logit_mean)
    elif method in ("sigmoid", "shift", "flux_shift"):
        t = torch.sigmoid(torch.randn(n, generator=gen) * sigmoid_scale)
        if method == "shift":
            t = time_shift(t, discrete_flow_shift)
        elif method == "flux_shift":
            t = time_shift(t, math.exp(resolution_mu(*latent_hw)))
    else:
        raise ValueError(f"unknown timestep sampling {method!r}")
    return t.clamp(1e-5, 1.0 - 1e-5)


def noised(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) x0 + t noise, t broadcast per sample."""
    tb = t.reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return (1 - tb) * x0 + tb * noise


def elementwise_loss(pred: Tensor, target: Tensor, loss_function: str) -> Tensor:
    """Per-element loss (no reduction) for ComfyUI's four loss choices."""
    if loss_function == "MSE":
        return F.mse_loss(pred, target, reduction="none")
    if loss_function == "L1":
        return F.l1_loss(pred, target, reduction="none")
    if loss_function == "Huber":
        return F.huber_loss(pred, target, reduction="none")
    if loss_function == "SmoothL1":
        return F.smooth_l1_loss(pred, target, reduction="none")
    raise ValueError(f"unknown loss function {loss_function!r}")


def flow_loss(
    velocity: Tensor,
    x0: Tensor,
    noise: Tensor,
    t: Tensor,
    *,
    loss_function: str = "MSE",
    target: str = "velocity",
    mask: Tensor | None = None,
) -> Tensor:
    """Per-sample loss [B] of a velocity prediction.

    target "velocity": loss(v, noise - x0) (the flow-matching objective); "x0": loss on the denoised
    estimate x_t - t v against x0 (ComfyUI's TrainLoraNode objective, = t^2-weighted velocity MSE).
    mask [B, 1 or C, h, w] in 0..1 weights each latent pixel; the loss is the weighted mean.
    """
    velocity = velocity.float()
    if target == "velocity":
        err = elementwise_loss(velocity, (noise - x0).float(), loss_function)
    elif target == "x0":
        tb = t.reshape(-1, 1, 1, 1).float()
        xt = noised(x0.float(), noise.float(), t)
        err = elementwise_loss(xt - tb * velocity, x0.float(), loss_function)
    else:
        raise ValueError(f"unknown loss target {target!r}")
    if mask is None:
        return err.flatten(1).mean(1)
    weight = mask.float().expand_as(err)
    return (err * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1e-8)
