"""FLUX.1 architectures in the BFL layout: transformer, autoencoder, params, packing, tiling."""

from __future__ import annotations

from .apply import flux_forward_latent
from .autoencoder import AutoEncoder, AutoEncoderParams, detect_autoencoder_params
from .extensions import FluxExtensions, TokenState
from .model import Flux
from .packing import make_image_ids, make_text_ids, pack_latents, unpack_latents
from .params import FluxParams, detect_flux_params, flux_variant_name
from .tiling import decode_tiled, encode_tiled

__all__ = [
    "AutoEncoder",
    "AutoEncoderParams",
    "Flux",
    "FluxExtensions",
    "FluxParams",
    "TokenState",
    "decode_tiled",
    "detect_autoencoder_params",
    "detect_flux_params",
    "encode_tiled",
    "flux_forward_latent",
    "flux_variant_name",
    "make_image_ids",
    "make_text_ids",
    "pack_latents",
    "unpack_latents",
]
