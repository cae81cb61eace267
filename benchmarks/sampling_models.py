"""The models `benchmarks/sampling.py` times: tiny-but-not-trivial CPU weights, or full-size FLUX.1-dev.

Both are random weights in the BFL layout with the tiny tokenizers (their ids are valid for the real
vocabularies too), so the benchmark needs no downloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class Models:
    transformer: torch.nn.Module
    flux_params: Any
    vae: torch.nn.Module
    vae_params: Any
    clip: torch.nn.Module
    t5: torch.nn.Module
    clip_tokenizer: Any
    t5_tokenizer: Any
    dtype: torch.dtype
    device: torch.device
    tokenizer_dir: Path


def tiny_models(tokenizer_dir: Path) -> Models:
    from models.flux.params import FluxParams, default_axes_dim
    from models.text.tiny_tokenizers import write_tiny_tokenizers
    from models.text.tokenizers import load_flux_tokenizers
    from models.tiny.weights import (
        TINY_AE,
        TINY_CLIP,
        TINY_T5,
        tiny_autoencoder,
        tiny_clip,
        tiny_flux,
        tiny_t5,
    )

    params = FluxParams(
        vec_in_dim=TINY_CLIP.width,
        context_in_dim=TINY_T5.width,
        hidden_size=256,
        num_heads=2,
        depth=2,
        depth_single_blocks=4,
        axes_dim=default_axes_dim(128),
    )
    write_tiny_tokenizers(tokenizer_dir)
    clip_tok, t5_tok = load_flux_tokenizers(tokenizer_dir)
    return Models(
        tiny_flux(params, seed=0),
        params,
        tiny_autoencoder(TINY_AE, seed=1),
        TINY_AE,
        tiny_clip(TINY_CLIP, seed=2),
        tiny_t5(TINY_T5, seed=3),
        clip_tok,
        t5_tok,
        torch.float32,
        torch.device("cpu"),
        tokenizer_dir,
    )


def full_models(tokenizer_dir: Path) -> Models:
    """Random full-size FLUX.1-dev weights made on the GPU in bf16 (default init, never float32)."""
    from models.flux.autoencoder import FLUX_AE, AutoEncoder
    from models.flux.model import Flux
    from models.flux.params import FLUX_DEV
    from models.text.clip import CLIP_L, build_clip
    from models.text.t5 import T5_XXL, build_t5
    from models.text.tiny_tokenizers import write_tiny_tokenizers
    from models.text.tokenizers import load_flux_tokenizers

    write_tiny_tokenizers(tokenizer_dir)  # token ids < 768 are valid for the real vocabularies too
    clip_tok, t5_tok = load_flux_tokenizers(tokenizer_dir)
    device, dtype = torch.device("cuda"), torch.bfloat16
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = Flux(FLUX_DEV).eval().requires_grad_(False)
            vae = AutoEncoder(FLUX_AE).eval().requires_grad_(False)
            clip = build_clip(CLIP_L)
            t5 = build_t5(T5_XXL)
    finally:
        torch.set_default_dtype(previous)
    return Models(
        transformer, FLUX_DEV, vae, FLUX_AE, clip, t5, clip_tok, t5_tok, dtype, device, tokenizer_dir
    )
