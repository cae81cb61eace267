"""FLUX.1 latent -> RGB preview by a fixed linear projection (ComfyUI's Latent2RGB factors for Flux)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# [16 latent channels][R, G, B] and the bias, for model-space latents (after process_in).
FLUX_LATENT_RGB_FACTORS: tuple[tuple[float, float, float], ...] = (
    (-0.0346, 0.0244, 0.0681),
    (0.0034, 0.0210, 0.0687),
    (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329),
    (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915),
    (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421),
    (-0.0515, 0.0201, 0.0011),
    (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749),
    (-0.1264, -0.0522, -0.1103),
    (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)
FLUX_LATENT_RGB_BIAS: tuple[float, float, float] = (-0.0329, -0.0718, -0.0851)


def latent_to_rgb(latent: Tensor) -> np.ndarray:
    """uint8 [h, w, 3] preview of a FLUX latent [16, h, w] (or the first of a batch [B, 16, h, w]).

    rgb = latent . factors + bias in -1..1, mapped to 0..255 and truncated, at latent resolution.
    """
    if latent.ndim == 4:
        latent = latent[0]
    if latent.ndim != 3 or latent.shape[0] != len(FLUX_LATENT_RGB_FACTORS):
        raise ValueError(
            f"expected a FLUX latent [16, h, w] or [B, 16, h, w], got shape {tuple(latent.shape)}"
        )
    x = latent.detach().float().cpu()
    factors = torch.tensor(FLUX_LATENT_RGB_FACTORS, dtype=torch.float32)  # [16, 3]
    bias = torch.tensor(FLUX_LATENT_RGB_BIAS, dtype=torch.float32)
    rgb = torch.nn.functional.linear(x.movedim(0, -1), factors.T, bias)  # [h, w, 3]
    return ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).to(torch.uint8).numpy()
