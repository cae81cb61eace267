"""Brownian-tree noise for the SDE samplers, as ComfyUI draws it (torchsde.BrownianTree on the CPU).

The noise between two sigmas is the Brownian increment W(sigma_next) - W(sigma) over sqrt|dsigma|,
so sub-steps of one step see correlated noise and the result hardly depends on the step count.
With the same seed and schedule this gives ComfyUI's dpmpp_sde / dpmpp_2m_sde / dpmpp_3m_sde noise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .contract import NoiseSampler


def brownian_noise_sampler(x: Tensor, sigmas: Tensor, seed: int | None) -> NoiseSampler:
    """A noise sampler over [min positive sigma, max sigma] of `sigmas`, seeded with `seed` itself
    (ComfyUI's BrownianTreeNoiseSampler with cpu=True); seed None draws a fresh entropy."""
    import torchsde  # deferred: importing torchsde (and its scipy) costs seconds; only SDE runs need it

    positive = sigmas[sigmas > 0]
    lo, hi = positive.min().detach().cpu().float(), sigmas.max().detach().cpu().float()
    if seed is None:
        generator = torch.Generator()
        generator.seed()
        seed = int(torch.randint(0, 2**63 - 1, (), generator=generator))
    tree = torchsde.BrownianTree(lo, torch.zeros(x.shape, dtype=x.dtype), hi, entropy=seed)
    device, dtype = x.device, x.dtype

    def noise_sampler(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        a = torch.as_tensor(sigma).detach().cpu().float()
        b = torch.as_tensor(sigma_next).detach().cpu().float()
        increment = tree(a, b) if a < b else -tree(b, a)  # W(b) - W(a)
        return (increment / (b - a).abs().sqrt()).to(device=device, dtype=dtype)

    return noise_sampler
