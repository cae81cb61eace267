"""Activation memory of one step, estimated from shapes (what a `use` declares beside its weights).

The estimates count the largest set of tensors alive at once inside one block, with a margin, not
an exact trace: enough to keep weights from crowding out activations and to pick a VAE tile size.
`attention_matrix` adds the [heads, L, L] scores that math (non-flash) attention materialises, as
on the CPU; fused attention kernels on CUDA keep them out of memory.
"""

from __future__ import annotations

import math
from typing import Any

import torch

MARGIN = 1.25


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def attention_on_cpu(device: torch.device) -> bool:
    return device.type == "cpu"


def flux_working_bytes(
    params: Any,
    *,
    batch: int,
    height: int,
    width: int,
    context_tokens: int = 512,
    extra_tokens: int = 0,
    dtype: torch.dtype = torch.bfloat16,
    attention_matrix: bool = False,
) -> int:
    """One transformer forward at `height` x `width` pixels for `batch` images (CFG halves included).

    Tokens L = (H/16)(W/16) + context + extra (Kontext references); per block the hidden states,
    q/k/v, the attention output and the MLP hidden layer are alive: L x hidden x (6 + mlp_ratio).
    """
    image_tokens = math.ceil(height / 16) * math.ceil(width / 16)
    tokens = image_tokens + context_tokens + extra_tokens
    per_token = params.hidden_size * (6 + params.mlp_ratio)
    total = batch * tokens * per_token * dtype_bytes(dtype)
    if attention_matrix:
        total += batch * params.num_heads * tokens * tokens * dtype_bytes(dtype)
    return int(total * MARGIN)


def vae_working_bytes(
    params: Any,
    *,
    batch: int,
    height: int,
    width: int,
    decode: bool,
    dtype: torch.dtype = torch.float32,
    attention_matrix: bool = False,
) -> int:
    """One VAE encode or decode of `batch` images of `height` x `width` pixels.

    The widest level at each resolution holds about five feature maps at once (input, norm, conv,
    residual, upsampled copy); the mid-block attention works on the latent grid with one head.
    """
    f = 2 ** (len(params.ch_mult) - 1)
    largest = 0
    for level, mult in enumerate(params.ch_mult):
        channels = params.ch * mult
        if decode and level + 1 < len(params.ch_mult):  # the upsampled copy of the level above
            channels = max(channels, params.ch * params.ch_mult[level + 1])
        pixels = (height // 2**level) * (width // 2**level)
        largest = max(largest, channels * pixels)
    total = batch * largest * 5 * dtype_bytes(dtype)
    if attention_matrix:
        latent = (height // f) * (width // f)
        total += batch * latent * latent * dtype_bytes(dtype)
    return int(total * MARGIN)


def text_working_bytes(
    *,
    hidden: int,
    ff: int,
    heads: int,
    tokens: int,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    attention_matrix: bool = True,
) -> int:
    """One text-encoder forward (CLIP or T5): hidden states, q/k/v, the feed-forward hidden layer."""
    total = batch * tokens * (hidden * 6 + ff) * dtype_bytes(dtype)
    if attention_matrix:
        total += batch * heads * tokens * tokens * dtype_bytes(dtype)
    return int(total * MARGIN)


def vae_tile_for(
    params: Any,
    *,
    room: int,
    batch: int,
    height: int,
    width: int,
    decode: bool,
    dtype: torch.dtype = torch.float32,
    attention_matrix: bool = False,
    minimum: int = 64,
) -> int | None:
    """The largest square tile (pixels, a multiple of 32) whose working memory fits `room`; None: no tiling.

    Returns `minimum` when even that does not fit (the caller's error path takes over).
    """

    def need(h: int, w: int) -> int:
        return vae_working_bytes(
            params,
            batch=batch,
            height=h,
            width=w,
            decode=decode,
            dtype=dtype,
            attention_matrix=attention_matrix,
        )

    if need(height, width) <= room:
        return None
    tile = max(height, width)
    while tile > minimum and need(min(tile, height), min(tile, width)) > room:
        tile = max(minimum, (tile * 3 // 4) // 32 * 32)
    return tile
