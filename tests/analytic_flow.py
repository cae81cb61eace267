"""An analytic flow problem with an exact denoiser, for testing samplers without a model.

Data x0 ~ N(MU, S^2) per element under x = (1 - sigma) x0 + sigma n has the exact denoiser
E[x0 | x] = MU + (1 - sigma) S^2 / var(sigma) * (x - (1 - sigma) MU), var = (1 - sigma)^2 S^2 + sigma^2,
and the probability-flow ODE keeps the z-score: x(sigma) = (1 - sigma) MU + sqrt(var(sigma)) z.
"""

from __future__ import annotations

import math

import torch

MU, S = 0.7, 0.4


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    sg = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    var = (1 - sg) ** 2 * S * S + sg * sg
    return MU + (1 - sg) * S * S / var * (x - (1 - sg) * MU)


def on_ode(sigma: float, z: torch.Tensor) -> torch.Tensor:
    return (1 - sigma) * MU + math.sqrt((1 - sigma) ** 2 * S * S + sigma * sigma) * z
