"""2x2 patchify of latents into tokens, and the position ids FLUX uses for image and text tokens."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor


def pack_latents(x: Tensor) -> Tensor:
    """[B, C, H, W] (H, W even) -> tokens [B, (H/2)(W/2), C*4]; feature index c*4 + ph*2 + pw."""
    if x.ndim != 4 or x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f"pack_latents needs [B, C, H, W] with even H and W, got {tuple(x.shape)}")
    return rearrange(x, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2)


def unpack_latents(tokens: Tensor, height: int, width: int) -> Tensor:
    """Tokens [B, (height/2)(width/2), C*4] -> [B, C, height, width]; height/width in latent pixels."""
    if height % 2 or width % 2 or tokens.shape[1] != (height // 2) * (width // 2) or tokens.shape[-1] % 4:
        raise ValueError(f"cannot unpack tokens {tuple(tokens.shape)} to a {height}x{width} latent")
    return rearrange(tokens, "b (h w) (c ph pw) -> b c (h ph) (w pw)", h=height // 2, ph=2, pw=2)


def make_image_ids(
    batch: int,
    h: int,
    w: int,
    index: int = 0,
    h_offset: int = 0,
    w_offset: int = 0,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Ids for an h x w token grid: float32 [batch, h*w, 3] = (index, h_offset + row, w_offset + col).

    All values in token units (one token = 2x2 latent pixels). Index 1 marks Kontext reference tokens.
    """
    rows = torch.arange(h, device=device, dtype=torch.float32) + h_offset
    cols = torch.arange(w, device=device, dtype=torch.float32) + w_offset
    ids = torch.stack(
        (
            torch.full((h, w), float(index), device=device),
            rows[:, None].expand(h, w),
            cols[None, :].expand(h, w),
        ),
        dim=-1,
    )
    return ids.reshape(1, h * w, 3).expand(batch, -1, -1).contiguous()


def make_text_ids(batch: int, length: int, *, device: torch.device | str | None = None) -> Tensor:
    """All-zero ids float32 [batch, length, 3]: text gets the identity rotation."""
    return torch.zeros(batch, length, 3, device=device)
