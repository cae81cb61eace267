"""Image preprocessing for vision towers, as ComfyUI's `clip_preprocess` does it.

IMAGE [B, H, W, C] in 0..1 -> [B, 3, S, S] normalised: crop=True resizes the short side to S
(bicubic, antialiased) and center-crops; crop=False squashes to S x S (what BFL's Redux and
SigLIP's own processor do). Values are rounded to 8 bits before normalising.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def vision_preprocess(
    image: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float], *, crop: bool = True
) -> torch.Tensor:
    """IMAGE [B, H, W, C] (C >= 3) in 0..1 -> normalised float32 [B, 3, size, size]."""
    if image.ndim != 4 or image.shape[-1] < 3:
        raise ValueError(f"expected an IMAGE [B, H, W, 3], got shape {tuple(image.shape)}")
    x = image[..., :3].movedim(-1, 1).float()
    if x.shape[-2:] != (size, size):
        if crop:
            scale = size / min(x.shape[-2], x.shape[-1])
            target = (round(scale * x.shape[-2]), round(scale * x.shape[-1]))
        else:
            target = (size, size)
        x = F.interpolate(x, size=target, mode="bicubic", antialias=True)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[..., top : top + size, left : left + size]
    x = torch.clip(255.0 * x, 0, 255).round() / 255.0
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_t) / std_t
