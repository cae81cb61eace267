"""VAE encode/decode between IMAGE tensors and LATENT samples (ComfyUI's conventions), plain or tiled."""

from __future__ import annotations

from typing import Any

import torch

from nodes.runtime.device import compute_device, use_models, vae_tile
from nodes.runtime.services import Ctx


def crop_to_multiple(pixels: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """Center-crop IMAGE [B, H, W, C] so H and W are multiples of `multiple` (ComfyUI's VAE input rule)."""
    h = pixels.shape[1] // multiple * multiple
    w = pixels.shape[2] // multiple * multiple
    if (h, w) == tuple(pixels.shape[1:3]):
        return pixels
    dy = (pixels.shape[1] % multiple) // 2
    dx = (pixels.shape[2] % multiple) // 2
    return pixels[:, dy : dy + h, dx : dx + w, :]


def _autoencoder(vae: Any) -> Any:
    if vae is None:
        raise RuntimeError(
            "vae input is invalid: None. If it comes from a checkpoint loader, the checkpoint "
            "holds no VAE; load one with VAELoader instead."
        )
    return vae.module


def encode(
    ctx: Ctx, vae: Any, pixels: torch.Tensor, *, tile: int | None = None, overlap: int = 64
) -> torch.Tensor:
    """IMAGE [B, H, W, C] in 0..1 -> un-scaled latent means [B, 16, H/8, W/8] float32 on the CPU.

    `tile` / `overlap` are in pixels; None encodes in one piece.
    """
    ae = _autoencoder(vae)
    pixels = crop_to_multiple(pixels[..., :3])
    tile, overlap, working = vae_tile(
        ctx, vae, pixels.shape[0], pixels.shape[1], pixels.shape[2], decode=False, tile=tile, overlap=overlap
    )
    with use_models(ctx, vae, working_bytes=working):
        device, dtype = compute_device(ctx, ae), vae.compute_dtype
        x = pixels.movedim(-1, 1).to(device=device, dtype=dtype) * 2.0 - 1.0
        if tile is None:
            z = ae.encode(x)
        else:
            from models.flux.tiling import encode_tiled

            z = encode_tiled(ae, x, tile=tile, overlap=overlap)
    return vae.params.latent_format.process_out(z.float().cpu())


def decode(
    ctx: Ctx, vae: Any, samples: torch.Tensor, *, tile: int | None = None, overlap: int = 64
) -> torch.Tensor:
    """Un-scaled latents [B, 16, h, w] -> IMAGE [B, 8h, 8w, 3] float32 in 0..1 on the CPU.

    `tile` / `overlap` are in pixels; None decodes in one piece.
    """
    ae = _autoencoder(vae)
    f = vae.params.downscale
    tile, overlap, working = vae_tile(
        ctx,
        vae,
        samples.shape[0],
        samples.shape[-2] * f,
        samples.shape[-1] * f,
        decode=True,
        tile=tile,
        overlap=overlap,
    )
    with use_models(ctx, vae, working_bytes=working):
        device, dtype = compute_device(ctx, ae), vae.compute_dtype
        z = vae.params.latent_format.process_in(samples.float()).to(device=device, dtype=dtype)
        if tile is None:
            x = ae.decode(z)
        else:
            from models.flux.tiling import decode_tiled

            x = decode_tiled(ae, z, tile=tile, overlap=overlap)
    return ((x.float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)
