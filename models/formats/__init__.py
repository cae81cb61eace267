"""Checkpoint files: inspect headers, detect family and layout, convert layouts, load lazily.

Public API (see the modules for details):
- `inspect_file(path) -> FileInfo`, `inspect_weights(path) -> WeightsInfo` (header only)
- `detect_path(path) -> Detection` (components: family, layout, prefix, fp8)
- `load_flux_transformer`, `load_autoencoder`, `load_text_encoder`, `load_checkpoint`
- errors: `CheckpointFormatError` (ValueError) > `WrongFamilyError`, `UnsupportedFormatError`
"""

from __future__ import annotations

from .detect import AUTOENCODER, CLIP_L, FLUX, T5XXL, Component, Detection, detect_path, detect_weights
from .errors import CheckpointFormatError, UnsupportedFormatError, WrongFamilyError
from .fp8 import WEIGHT_DTYPES, CastLinear
from .header import FileInfo, TensorInfo, WeightsInfo, inspect_file, inspect_weights
from .load import (
    LoadedCheckpoint,
    load_autoencoder,
    load_checkpoint,
    load_flux_transformer,
    load_text_encoder,
)

__all__ = [
    "AUTOENCODER",
    "CLIP_L",
    "FLUX",
    "T5XXL",
    "WEIGHT_DTYPES",
    "CastLinear",
    "CheckpointFormatError",
    "Component",
    "Detection",
    "FileInfo",
    "LoadedCheckpoint",
    "TensorInfo",
    "UnsupportedFormatError",
    "WeightsInfo",
    "WrongFamilyError",
    "detect_path",
    "detect_weights",
    "inspect_file",
    "inspect_weights",
    "load_autoencoder",
    "load_checkpoint",
    "load_flux_transformer",
    "load_text_encoder",
]
