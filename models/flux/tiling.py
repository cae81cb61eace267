"""Tiled VAE encode/decode: overlapping tiles, blended with linear ramps across each overlap.

Memory grows with the tile, not the image. Tiles see only their own context (GroupNorm statistics
and mid-block attention are per tile), so results differ slightly from one-piece coding; with a
tile covering the whole image the result is exactly the one-piece result.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .autoencoder import AutoEncoder


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length `tile` covering 0..size with at least `overlap` shared."""
    if tile >= size:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _ramp(length: int, width: int, rise: bool, fall: bool, device: torch.device) -> Tensor:
    w = torch.ones(length, device=device)
    ramp = torch.arange(1, width + 1, device=device, dtype=torch.float32) / (width + 1)
    width = min(width, length)
    if rise:
        w[:width] = torch.minimum(w[:width], ramp[:width])
    if fall:
        w[length - width :] = torch.minimum(w[length - width :], ramp[:width].flip(0))
    return w


def run_tiled(fn: Callable[[Tensor], Tensor], x: Tensor, tile: int, overlap: int, ratio: float) -> Tensor:
    """Apply `fn` ([B, C, h, w] -> [B, C', h*ratio, w*ratio]) tile by tile; tile/overlap in input pixels."""
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got tile {tile}, overlap {overlap}")
    height, width = x.shape[-2:]
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return fn(x)
    out = weight = None
    blend = int(overlap * ratio)
    for y0 in ys:
        for x0 in xs:
            th, tw = min(tile, height), min(tile, width)
            piece = fn(x[..., y0 : y0 + th, x0 : x0 + tw])
            if out is None:
                shape = (*piece.shape[:2], round(height * ratio), round(width * ratio))
                out = torch.zeros(shape, device=piece.device, dtype=torch.float32)
                weight = torch.zeros(shape[-2:], device=piece.device, dtype=torch.float32)
            oy, ox = round(y0 * ratio), round(x0 * ratio)
            ph, pw = piece.shape[-2:]
            wy = _ramp(ph, blend, y0 > 0, y0 + th < height, piece.device)
            wx = _ramp(pw, blend, x0 > 0, x0 + tw < width, piece.device)
            mask = wy[:, None] * wx[None, :]
            assert out is not None and weight is not None  # made at the first tile
            out[..., oy : oy + ph, ox : ox + pw] += piece.float() * mask
            weight[oy : oy + ph, ox : ox + pw] += mask
    assert out is not None and weight is not None
    return (out / weight).to(piece.dtype)


def decode_tiled(ae: AutoEncoder, z: Tensor, *, tile: int = 512, overlap: int = 64) -> Tensor:
    """Scaled latents [B, z, h, w] -> pixels [B, 3, 8h, 8w]; tile and overlap in output pixels."""
    f = ae.params.downscale
    return run_tiled(ae.decode, z, max(1, tile // f), overlap // f, float(f))


def encode_tiled(ae: AutoEncoder, x: Tensor, *, tile: int = 512, overlap: int = 64) -> Tensor:
    """Pixels [B, 3, H, W] in -1..1 (H, W multiples of 8) -> scaled latents; tile and overlap in pixels."""
    f = ae.params.downscale
    if x.shape[-2] % f or x.shape[-1] % f:
        raise ValueError(f"encode_tiled needs H and W divisible by {f}, got {tuple(x.shape[-2:])}")
    # tiles and their starts stay on the latent grid
    return run_tiled(ae.encode, x, max(f, tile // f * f), overlap // f * f, 1.0 / f)
