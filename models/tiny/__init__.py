"""Tiny random-weight FLUX models in every real file layout, for demos and tests."""

from __future__ import annotations

from .demo import DIFFUSERS_NAME, write_demo_models, write_diffusers_pipeline
from .weights import (
    TINY_AE,
    TINY_CLIP,
    TINY_FLUX_CANNY,
    TINY_FLUX_DEV,
    TINY_FLUX_FILL,
    TINY_FLUX_SCHNELL,
    TINY_T5,
    tiny_autoencoder,
    tiny_clip,
    tiny_flux,
    tiny_t5,
)

__all__ = [
    "DIFFUSERS_NAME",
    "TINY_AE",
    "TINY_CLIP",
    "TINY_FLUX_CANNY",
    "TINY_FLUX_DEV",
    "TINY_FLUX_FILL",
    "TINY_FLUX_SCHNELL",
    "TINY_T5",
    "tiny_autoencoder",
    "tiny_clip",
    "tiny_flux",
    "tiny_t5",
    "write_demo_models",
    "write_diffusers_pipeline",
]
