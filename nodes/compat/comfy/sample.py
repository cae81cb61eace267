"""ComfyUI's `comfy.sample`: the noise packs prepare and sampling through our KSampler.

`prepare_noise` draws ComfyUI's numbers. `sample` runs our KSampler (or KSamplerAdvanced for a step
window or without noise); it needs the `seed` the noise came from and checks that `noise` is that
seed's noise, since our samplers draw their own.
"""

from __future__ import annotations

from typing import Any

import torch

from models.sampling.noise import prepare_noise as _prepare_noise

from ..core_nodes import common_ksampler
from ..host import pack_of_caller
from ..missing import MissingComfyFeature, module_getattr

__getattr__ = module_getattr(__name__)


def prepare_noise(latent_image: torch.Tensor, seed: int, noise_inds: Any = None) -> torch.Tensor:
    return _prepare_noise(latent_image, seed, noise_inds)


def fix_empty_latent_channels(model: Any, latent_image: torch.Tensor) -> torch.Tensor:
    return latent_image


def sample(
    model: Any,
    noise: torch.Tensor,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Any,
    negative: Any,
    latent_image: torch.Tensor,
    denoise: float = 1.0,
    disable_noise: bool = False,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
    noise_mask: torch.Tensor | None = None,
    callback: Any = None,
    disable_pbar: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """Denoised latent samples [B, C, h, w], as ComfyUI's comfy.sample.sample returns them."""
    if seed is None or (
        not disable_noise and not torch.equal(noise.cpu(), _prepare_noise(latent_image, seed).to(noise.dtype))
    ):
        raise MissingComfyFeature(
            pack_of_caller(2), "comfy.sample.sample with noise not drawn by prepare_noise(seed)"
        )
    latent: dict[str, Any] = {"samples": latent_image}
    if noise_mask is not None:
        latent["noise_mask"] = noise_mask
    (out,) = common_ksampler(
        model,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        positive,
        negative,
        latent,
        denoise=denoise,
        disable_noise=disable_noise,
        start_step=start_step,
        last_step=last_step,
        force_full_denoise=force_full_denoise,
    )
    return out["samples"]
