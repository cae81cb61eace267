"""Validation sampling during training: a few Euler steps on FLUX's shifted schedule, no reloading.

The caller hooks the adapters into whichever base it validates on (the training base, or a
separate inference base with the same layout) and decodes the latents with its VAE.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn

from models.flux.apply import flux_forward_latent
from models.flux.model import Flux

from .flow import resolution_mu, time_shift


@torch.no_grad()
def sample_latents(
    model: nn.Module,
    context: Tensor,
    pooled: Tensor,
    *,
    latent_hw: tuple[int, int],
    steps: int = 8,
    guidance: float | None = 3.5,
    seed: int = 0,
    channels: int = 16,
    latent_scale: float = 0.3611,
    latent_shift: float = 0.1159,
) -> Tensor:
    """One latent [1, C, h, w] in LATENT space (un-scaled, ready for VAEDecode) from seeded noise.

    context [T, D] or [1, T, D]; pooled [P] or [1, P]. The schedule is BFL's: linspace(1, 0) shifted
    with the resolution's mu.
    """
    device = next(model.parameters()).device
    ctx = (context if context.ndim == 3 else context[None]).float().to(device)
    pool = (pooled if pooled.ndim == 2 else pooled[None]).float().to(device)
    x = torch.randn((1, channels, *latent_hw), generator=torch.Generator().manual_seed(seed)).to(device)
    sigmas = time_shift(torch.linspace(1.0, 0.0, steps + 1), math.exp(resolution_mu(*latent_hw)))
    embed = bool(getattr(getattr(model, "params", None), "guidance_embed", True))
    g = torch.tensor([guidance if guidance is not None else 3.5], device=device) if embed else None
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        v = flux_forward_latent(cast(Flux, model), x, torch.tensor([s], device=device), ctx, pool, g).float()
        x = x + (s_next - s) * v
    return (x / latent_scale + latent_shift).cpu()
