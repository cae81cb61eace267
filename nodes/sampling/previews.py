"""Latent previews during sampling: the first image of the batch, projected to RGB, as a small JPEG."""

from __future__ import annotations

import torch
from PIL import Image

from models.sampling.preview import latent_to_rgb
from nodes.image.tensors import encode_pil

PREVIEW_MAX_SIZE = 512


def latent_preview_jpeg(x0: torch.Tensor, *, max_size: int = PREVIEW_MAX_SIZE, quality: int = 90) -> bytes:
    """JPEG bytes of the first latent [B, 16, h, w] (model space) at latent resolution, at most `max_size` px."""
    image = Image.fromarray(latent_to_rgb(x0[:1]), mode="RGB")
    return encode_pil(image, fmt="JPEG", max_size=max_size, quality=quality)
