"""Conversions between Pillow images, IMAGE tensors [B, H, W, C] and MASK tensors [B, H, W], and preview encoding.

Values follow ComfyUI: float32 in 0..1, 8-bit files mapped as k / 255, and back with
`clip(255 * x).astype(uint8)` (truncating, as ComfyUI's SaveImage does, so saved files match).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

# ComfyUI's placeholder mask when an image has no alpha channel.
EMPTY_MASK_SIZE = 64


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """One image [H, W, C] (or mask [H, W]) in 0..1 -> uint8 array, clipped and truncated like ComfyUI."""
    array = image.detach().to(device="cpu", dtype=torch.float32).numpy()
    return np.clip(255.0 * array, 0, 255).astype(np.uint8)


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """One image [H, W, C] with C in (1, 3, 4), or a mask [H, W], in 0..1 -> an L, RGB or RGBA Pillow image."""
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise ValueError(f"expected an image [H, W, 1|3|4] or a mask [H, W], got shape {tuple(image.shape)}")
    return Image.fromarray(to_uint8(image))


def _scaled_for_8bit(frame: Image.Image) -> Image.Image:
    """32-bit integer frames hold 0..65535 from 16-bit files: scale to 0..255 before converting to RGB."""
    if frame.mode == "I":
        return frame.point(lambda value: value * (1 / 255))  # ComfyUI's own factor for mode I
    if frame.mode.startswith("I;16"):
        return frame.convert("I").point(lambda value: value * (1 / 257))
    return frame


def pil_to_image(frame: Image.Image) -> torch.Tensor:
    """A Pillow image (any mode) -> IMAGE [1, H, W, 3] float32 in 0..1 (alpha dropped)."""
    rgb = _scaled_for_8bit(frame).convert("RGB")
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)[None]


def alpha_of(frame: Image.Image) -> Image.Image | None:
    """The alpha band of a frame (also for palette images with a transparent colour), or None."""
    if "A" in frame.getbands():
        return frame.getchannel("A")
    if frame.mode == "P" and "transparency" in frame.info:
        return frame.convert("RGBA").getchannel("A")
    return None


def mask_from_alpha(frame: Image.Image) -> torch.Tensor | None:
    """MASK [1, H, W] = 1 - alpha (opaque 0, transparent 1), as LoadImage returns it; None without alpha."""
    alpha = alpha_of(frame)
    if alpha is None:
        return None
    return 1.0 - torch.from_numpy(np.asarray(alpha, dtype=np.float32) / 255.0)[None]


def empty_mask() -> torch.Tensor:
    """ComfyUI's stand-in mask for an image without alpha: zeros [1, 64, 64]."""
    return torch.zeros((1, EMPTY_MASK_SIZE, EMPTY_MASK_SIZE), dtype=torch.float32)


def channel_mask(frame: Image.Image, channel: str) -> torch.Tensor:
    """MASK [1, H, W] from one channel ("alpha", "red", "green", "blue") of a frame; alpha is inverted."""
    band = channel[0].upper()
    if frame.getbands() != ("R", "G", "B", "A"):
        frame = _scaled_for_8bit(frame).convert("RGBA")
    values = torch.from_numpy(np.asarray(frame.getchannel(band), dtype=np.float32) / 255.0)
    return (1.0 - values if band == "A" else values)[None]


def encode_image(
    image: torch.Tensor, *, fmt: str = "JPEG", max_size: int | None = 512, quality: int = 90
) -> bytes:
    """Encode one image [H, W, C] in 0..1 as JPEG, PNG or WEBP bytes, shrunk to at most `max_size` px per side.

    Used for live previews (`ctx.report_progress(..., preview=...)`); JPEG drops alpha.
    """
    return encode_pil(tensor_to_pil(image), fmt=fmt, max_size=max_size, quality=quality)


def encode_pil(
    pil: Image.Image, *, fmt: str = "JPEG", max_size: int | None = 512, quality: int = 90
) -> bytes:
    """Encode a PIL image as JPEG, PNG or WEBP bytes, shrunk to at most `max_size` px per side (previews)."""
    fmt = fmt.upper()
    if fmt not in ("JPEG", "PNG", "WEBP"):
        raise ValueError(f"preview format must be JPEG, PNG or WEBP, got {fmt!r}")
    if fmt == "JPEG" and pil.mode == "RGBA":
        pil = pil.convert("RGB")
    if max_size is not None and max(pil.size) > max_size:
        pil = pil.copy()
        pil.thumbnail((max_size, max_size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {"compress_level": 1}
    pil.save(buffer, format=fmt, **options)
    return buffer.getvalue()
