"""Latent previews during sampling: the first image of the batch, projected to RGB, as a small JPEG."""

from __future__ import annotations

import io

import torch
from PIL import Image

PREVIEW_MAX_SIZE = 512


def latent_preview_jpeg(x0: torch.Tensor, *, max_size: int = PREVIEW_MAX_SIZE, quality: int = 90) -> bytes:
    """JPEG bytes of the first latent [B, 16, h, w] (model space) at latent resolution, at most `max_size` px."""
    from models.sampling.preview import latent_to_rgb

    image = Image.fromarray(latent_to_rgb(x0[:1]), mode="RGB")
    if max(image.size) > max_size:
        image.thumbnail((max_size, max_size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
