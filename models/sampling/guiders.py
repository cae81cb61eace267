"""Guiders: wrap a conditional model into the denoiser contract (CFG), and inpainting masks.

`cfg_denoiser` is ComfyUI's CFGGuider on x0 predictions; `masked_denoiser` is KSamplerX0Inpaint
(the unmasked region is pinned to the noised input latent at every model call); and
`differential_diffusion` is the per-step threshold mask of ComfyUI's DifferentialDiffusion node.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .contract import Denoiser
from .errors import SamplingError
from .model_sampling import FlowModelSampling

ModelFn = Callable[[Tensor, Tensor, Any], Tensor]
"""A conditional model: `(x [B, C, h, w], sigma [B], cond) -> x0 [B, C, h, w]`."""

BatchConds = Callable[[Any, Any], Any]
"""`(positive, negative) -> one cond for the doubled batch [pos; neg]`, or None when they can't be batched."""

MaskFn = Callable[[Tensor, Tensor], Tensor]
"""`(sigma [B], denoise_mask [B, C, h, w]) -> the mask to use at this model call`."""


def cfg_combine(cond_x0: Tensor, uncond_x0: Tensor, cfg: float) -> Tensor:
    """Classifier-free guidance on x0 predictions: uncond + cfg * (cond - uncond)."""
    return uncond_x0 + (cond_x0 - uncond_x0) * cfg


def cfg_denoiser(
    model_fn: ModelFn,
    positive: Any,
    negative: Any = None,
    cfg: float = 1.0,
    *,
    batch_conds: BatchConds | None = None,
) -> Denoiser:
    """A denoiser doing CFG with `model_fn`; cfg == 1 (or no negative) evaluates the positive only.

    With `batch_conds`, positive and negative run as one doubled batch when it returns a cond.
    """
    if negative is None or math.isclose(cfg, 1.0):

        def conditional(x: Tensor, sigma: Tensor) -> Tensor:
            return model_fn(x, sigma, positive)

        return conditional

    both = batch_conds(positive, negative) if batch_conds is not None else None  # once, not per call

    def guided(x: Tensor, sigma: Tensor) -> Tensor:
        if both is not None:
            cond_x0, uncond_x0 = model_fn(torch.cat([x, x]), torch.cat([sigma, sigma]), both).chunk(2)
        else:
            cond_x0, uncond_x0 = model_fn(x, sigma, positive), model_fn(x, sigma, negative)
        return cfg_combine(cond_x0, uncond_x0, cfg)

    return guided


def batch_tensor_conds(
    positive: Mapping[str, Tensor], negative: Mapping[str, Tensor]
) -> dict[str, Tensor] | None:
    """A `BatchConds` for conds that are dicts of per-sample tensors: concatenated along the batch
    axis when both have the same keys and the same non-batch shapes, else None."""
    if positive.keys() != negative.keys():
        return None
    if any(positive[k].shape[1:] != negative[k].shape[1:] for k in positive):
        return None
    return {k: torch.cat([positive[k], negative[k]]) for k in positive}


def prepare_denoise_mask(mask: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """A noise mask ([h, w], [B, h, w] or [B, 1, h, w], any resolution) -> float32 `shape` [B, C, h, w].

    Bilinear resize to the latent size, channels repeated, batch repeated or cut (ComfyUI's reshape_mask).
    """
    if len(shape) != 4:
        raise SamplingError(f"denoise masks are supported for 4-D latents, got latent shape {tuple(shape)}")
    if mask.ndim < 2:
        raise SamplingError(f"a denoise mask needs at least 2 dims (h, w), got shape {tuple(mask.shape)}")
    batch, channels, height, width = shape
    m = mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    m = F.interpolate(m, size=(height, width), mode="bilinear")
    if m.shape[1] < channels:
        m = m.repeat(1, channels, 1, 1)[:, :channels]
    if m.shape[0] < batch:
        m = m.repeat(math.ceil(batch / m.shape[0]), 1, 1, 1)
    return m[:batch]


def masked_denoiser(
    denoiser: Denoiser,
    *,
    latent_image: Tensor,
    noise: Tensor,
    denoise_mask: Tensor,
    model_sampling: FlowModelSampling,
    mask_fn: MaskFn | None = None,
) -> Denoiser:
    """Inpainting: where the mask is 0 the input is replaced by the input latent noised to the current
    sigma, and the x0 estimate by the input latent itself (ComfyUI's KSamplerX0Inpaint).

    latent_image, noise [B, C, h, w] in model space; denoise_mask [B, C, h, w] in 0..1 (1 = regenerate).
    """
    if denoise_mask.shape != latent_image.shape:
        raise SamplingError(
            f"denoise mask shape {tuple(denoise_mask.shape)} does not match the latent "
            f"{tuple(latent_image.shape)}; use prepare_denoise_mask"
        )

    def inpaint(x: Tensor, sigma: Tensor) -> Tensor:
        mask = denoise_mask if mask_fn is None else mask_fn(sigma, denoise_mask)
        keep = 1.0 - mask
        sigma_b = sigma.reshape(sigma.shape[0], *([1] * (noise.ndim - 1)))
        x = x * mask + model_sampling.noise_scaling(sigma_b, noise, latent_image) * keep
        return denoiser(x, sigma) * mask + latent_image * keep

    return inpaint


def differential_diffusion(
    sigmas: Tensor, model_sampling: FlowModelSampling, strength: float = 1.0
) -> MaskFn:
    """ComfyUI's DifferentialDiffusion: at each call the mask becomes (mask >= threshold), where the
    threshold falls linearly in model time from 1 at sigmas[0] to 0 at max(sigmas[-1], sigma_min);
    strength < 1 blends that binary mask with the original one."""
    sigma_to = max(model_sampling.sigma_min, float(sigmas[-1]))
    ts_from = model_sampling.timestep(float(sigmas[0]))
    ts_to = model_sampling.timestep(sigma_to)

    def threshold_mask(sigma: Tensor, denoise_mask: Tensor) -> Tensor:
        threshold = (model_sampling.timestep(float(sigma.reshape(-1)[0])) - ts_to) / (ts_from - ts_to)
        binary = (denoise_mask >= threshold).to(denoise_mask.dtype)
        if strength and strength < 1:
            return strength * binary + (1 - strength) * denoise_mask
        return binary

    return threshold_mask
