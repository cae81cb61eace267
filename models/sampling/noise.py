"""Seeded noise: the initial latent noise (ComfyUI's prepare_noise) and SDE noise samplers.

Both draw on their own CPU `torch.Generator`, never torch's global RNG, so a seed gives the same
noise on every device and sampling leaves the caller's RNG state alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .contract import NoiseSampler
from .errors import SamplingError

_SEED_LIMIT = 2**64


def _generator(seed: int) -> torch.Generator:
    if not -(2**63) <= seed < _SEED_LIMIT:
        raise SamplingError(f"seed {seed} is outside the 64-bit range torch generators accept")
    return torch.Generator(device="cpu").manual_seed(seed)


def prepare_noise(latent: Tensor, seed: int, batch_index: Sequence[int] | Tensor | None = None) -> Tensor:
    """Standard normal noise shaped like `latent` [B, C, h, w], on the CPU in the latent's dtype.

    The same numbers as ComfyUI's comfy.sample.prepare_noise (torch.manual_seed(seed) then one randn
    of the whole shape). With `batch_index` (latents cut from a larger batch), noise is drawn one
    [1, C, h, w] sample at a time for indices 0..max(batch_index) and sample i of the result is the
    draw number batch_index[i], so a latent keeps its noise when its batch is split.
    """
    generator = _generator(seed)
    dtype = latent.dtype if latent.dtype.is_floating_point else torch.float32
    if batch_index is None:
        return torch.randn(latent.shape, dtype=dtype, layout=latent.layout, generator=generator, device="cpu")
    indices = [int(i) for i in (batch_index.tolist() if isinstance(batch_index, Tensor) else batch_index)]
    if len(indices) == 0 or min(indices) < 0:
        raise SamplingError(f"batch_index must be non-empty and non-negative, got {indices}")
    wanted = set(indices)
    drawn: dict[int, Tensor] = {}
    for i in range(max(indices) + 1):
        sample = torch.randn((1, *latent.shape[1:]), dtype=dtype, generator=generator, device="cpu")
        if i in wanted:
            drawn[i] = sample
    return torch.cat([drawn[i] for i in indices], dim=0)


def make_noise_sampler(x: Tensor, seed: int | None) -> NoiseSampler:
    """Fresh N(0, 1) noise shaped like `x` at every call, from a CPU generator seeded with seed + 1.

    ComfyUI's default_noise_sampler seeds seed + 1 for a CPU latent; we always draw on the CPU (and
    move the noise to x's device) so results do not depend on the device. seed None: unseeded.
    """
    if seed is None:
        generator = torch.Generator(device="cpu")
        generator.seed()
    else:
        # wrap instead of overflowing at the largest seed ComfyUI's UI allows (2**64 - 1)
        generator = _generator((seed + 1) % _SEED_LIMIT if seed >= 0 else seed + 1)
    shape, dtype, device = x.shape, x.dtype, x.device

    def noise_sampler(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        return torch.randn(shape, dtype=dtype, generator=generator, device="cpu").to(device)

    return noise_sampler
