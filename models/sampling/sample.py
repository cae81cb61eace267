"""`sample`: what ComfyUI's KSampler / SamplerCustom path does for a flow model, minus the graph.

noise_scaling at sigmas[0] (sigmas[0] < 1 is img2img) -> optional inpainting mask -> the sampler
-> inverse_noise_scaling at sigmas[-1]. Latents are in model space (after the latent format's
process_in); the caller converts LATENT samples in and out.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .brownian import brownian_noise_sampler
from .contract import Denoiser, NoiseSampler, SamplerFn, ShouldStop, StepCallback
from .errors import SamplingError
from .guiders import BatchConds, PostCfg, cfg_denoiser, masked_denoiser, prepare_denoise_mask
from .guiders import differential_diffusion as dd_mask_fn
from .model_sampling import FlowModelSampling
from .noise import make_noise_sampler
from .samplers import BROWNIAN_NOISE_SAMPLERS, RANDOM_INPAINT_NOISE_SAMPLERS, SAMPLERS, get_sampler

log = logging.getLogger(__name__)


def sample(
    model: Any,
    *,
    noise: Tensor,
    latent_image: Tensor,
    sigmas: Tensor,
    sampler: str | SamplerFn,
    model_sampling: FlowModelSampling,
    positive: Any = None,
    negative: Any = None,
    cfg: float = 1.0,
    batch_conds: BatchConds | None = None,
    post_cfg: Sequence[PostCfg] = (),
    sampler_options: Mapping[str, Any] | None = None,
    denoise_mask: Tensor | None = None,
    differential_diffusion: float | None = None,
    add_noise: bool = True,
    noise_seed: int | None = None,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    should_stop: ShouldStop | None = None,
) -> Tensor:
    """Sample a latent; returns float32 [B, C, h, w] in model space.

    model: a denoiser `(x, sigma [B]) -> x0`, or, when `positive` is given, a conditional model
        `(x, sigma [B], cond) -> x0` wrapped in CFG with `negative` and `cfg` (see cfg_denoiser).
    noise, latent_image: [B, C, h, w]; the start is sigmas[0] * noise + (1 - sigmas[0]) * latent_image
        (noise is ignored when add_noise is False, as with DisableNoise).
    sigmas: [n + 1] from a scheduler; empty (denoise 0) returns `latent_image` unchanged.
    sampler: a registry name (SAMPLER_NAMES) or a sampler function; sampler_options are its keywords
        (eta, s_noise, ...). Samplers that take `model_sampling` get this one.
    post_cfg: functions run on every CFG result (see guiders.PostCfg), e.g. CFGZeroStar.
    denoise_mask: optional inpainting mask (1 = regenerate) at any resolution, [h, w] to [B, 1, h, w];
        differential_diffusion: strength of ComfyUI's DifferentialDiffusion on that mask (None = off).
    noise_seed: seeds the sampler noise unless a noise_sampler is given: a Brownian tree seeded with it
        for the dpmpp_*sde samplers, an N(0, 1) stream seeded with seed + 1 otherwise (as ComfyUI).
    callback gets a StepInfo each step; should_stop() is checked every step (raises Interrupted).
    """
    if sigmas.ndim != 1:
        raise SamplingError(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
    if sigmas.numel() == 0:
        return latent_image
    if noise.shape != latent_image.shape:
        raise SamplingError(
            f"noise shape {tuple(noise.shape)} does not match the latent {tuple(latent_image.shape)}"
        )
    fn = get_sampler(sampler) if isinstance(sampler, str) else sampler
    device = latent_image.device
    latent = latent_image.to(device=device, dtype=torch.float32)
    noise = noise.to(device=device, dtype=torch.float32) if add_noise else torch.zeros_like(latent)
    sigmas = sigmas.to(device=device, dtype=torch.float32)

    denoiser: Denoiser = (
        cfg_denoiser(model, positive, negative, cfg, batch_conds=batch_conds, post_cfg=post_cfg)
        if positive is not None
        else model
    )
    if denoise_mask is not None:
        mask = prepare_denoise_mask(denoise_mask, latent.shape).to(device)
        mask_fn = (
            dd_mask_fn(sigmas, model_sampling, differential_diffusion)
            if differential_diffusion is not None
            else None
        )
        denoiser = masked_denoiser(
            denoiser,
            latent_image=latent,
            noise=_inpaint_noise(noise, noise_seed) if sampler in RANDOM_INPAINT_NOISE_SAMPLERS else noise,
            denoise_mask=mask,
            model_sampling=model_sampling,
            mask_fn=mask_fn,
        )
    elif differential_diffusion is not None:
        log.debug("differential diffusion has no effect without a denoise mask")

    x = model_sampling.noise_scaling(sigmas[0], noise, latent)
    options = dict(sampler_options or {})
    if "model_sampling" in inspect.signature(fn).parameters:
        options.setdefault("model_sampling", model_sampling)
    if noise_sampler is None:
        brownian = fn in {SAMPLERS[name] for name in BROWNIAN_NOISE_SAMPLERS}
        noise_sampler = (
            brownian_noise_sampler(x, sigmas, noise_seed) if brownian else make_noise_sampler(x, noise_seed)
        )
    with torch.no_grad():
        x = fn(
            denoiser,
            x,
            sigmas,
            noise_sampler=noise_sampler,
            callback=callback,
            should_stop=should_stop,
            **options,
        )
    return model_sampling.inverse_noise_scaling(sigmas[-1], x).to(torch.float32)


def _inpaint_noise(noise: Tensor, seed: int | None) -> Tensor:
    """ComfyUI's "ddim" inpainting noise: randn from a CPU generator seeded with seed + 1 (unseeded: 42)."""
    generator = torch.Generator().manual_seed(((41 if seed is None else seed) + 1) % 2**64)
    return torch.randn(noise.shape, generator=generator).to(device=noise.device, dtype=noise.dtype)
