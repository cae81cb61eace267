"""Load CLIP / SigLIP vision towers from ComfyUI `clip_vision/` files or transformers folders."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.formats.errors import CheckpointFormatError, WrongFamilyError
from models.formats.header import inspect_weights
from models.formats.lazy import Source, load_module

from .towers import (
    SIGLIP,
    VisionParams,
    build_vision_tower,
    materialize_position_ids,
    vision_params_from_shapes,
)

log = logging.getLogger(__name__)


_BARE = ("embeddings.", "encoder.", "pre_layrnorm.", "post_layernorm.", "head.")


def _canonical(key: str) -> str:
    """File key -> the `vision_model.*` naming of ComfyUI files and HF hub checkpoints (transformers 5
    saves a bare SiglipVisionModel without that level)."""
    return f"vision_model.{key}" if key.startswith(_BARE) else key


@dataclass(frozen=True, eq=False)
class LoadedVision:
    """A vision tower (transformers module, eval) and its params."""

    module: nn.Module
    params: VisionParams


def load_vision_tower(path: str | Path, *, compute_dtype: torch.dtype | None = None) -> LoadedVision:
    """A CLIP ViT or SigLIP vision tower from a single file or a transformers folder (HF key names;
    text-tower keys of a full CLIP / SigLIP checkpoint are ignored)."""
    path = Path(path)
    info = inspect_weights(path)
    shapes = {_canonical(k): info.tensor(k).shape for k in info}
    try:
        params = vision_params_from_shapes(shapes)
    except (ValueError, KeyError) as exc:
        raise WrongFamilyError(
            path, "a CLIP or SigLIP vision tower", f"{len(shapes)} tensors", str(exc)
        ) from None
    wanted = ("vision_model.", "visual_projection.")

    def convert(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {_canonical(k): v for k, v in tensors.items()}
        if params.family == SIGLIP:  # transformers' SiglipVisionModel names drop the "vision_model." level
            return {k.removeprefix("vision_model."): v for k, v in out.items()}
        return out

    source = Source(info, convert=convert, ignore=lambda key: not _canonical(key).startswith(wanted))
    try:
        module = load_module(
            lambda: build_vision_tower(params),
            source,
            compute_dtype=compute_dtype,
            materialize=materialize_position_ids,
        )
    except CheckpointFormatError:
        raise
    log.info(
        "%s: loaded a %s vision tower (%d layers, width %d, %dpx)",
        path,
        params.family,
        params.num_layers,
        params.hidden_size,
        params.image_size,
    )
    return LoadedVision(module, params)
