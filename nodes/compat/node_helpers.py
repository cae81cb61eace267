"""ComfyUI's `node_helpers`: tolerant image opening, conditioning value setting, alpha fixing."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from .missing import module_getattr

__getattr__ = module_getattr(__name__)

T = TypeVar("T")


def conditioning_set_values(
    conditioning: list[list[Any]], values: Mapping[str, Any] | None = None, append: bool = False
) -> list[list[Any]]:
    """A copy of CONDITIONING `[[tensor, {options}], ...]` with `values` set in each entry's options
    (with `append`, list values extend an existing list)."""
    out = []
    for context, options in conditioning:
        options = dict(options)
        for key, value in (values or {}).items():
            old = options.get(key) if append else None
            options[key] = old + value if old is not None else value
        out.append([context, options])
    return out


def conditioning_set_values_with_timestep_range(
    conditioning: list[list[Any]], values: Mapping[str, Any], start_percent: float, end_percent: float
) -> list[list[Any]]:
    ranged = conditioning_set_values(
        conditioning, {**values, "start_percent": start_percent, "end_percent": end_percent}
    )
    return ranged


def pillow(fn: Callable[[T], Any], arg: T) -> Any:
    """Call a PIL function; on a truncated-file error retry once with LOAD_TRUNCATED_IMAGES on."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        return fn(arg)
    except (OSError, UnidentifiedImageError, ValueError):
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        return fn(arg)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def hasher() -> Callable[..., Any]:
    return hashlib.sha256


def string_to_torch_dtype(name: str) -> torch.dtype:
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def image_alpha_fix(destination: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Give `destination` and `source` [B, H, W, C] the same channel count (an alpha of 1 is added)."""
    if destination.shape[-1] < source.shape[-1]:
        source = source[..., : destination.shape[-1]]
    elif destination.shape[-1] > source.shape[-1]:
        pad = torch.ones_like(source[..., :1]).expand(
            *source.shape[:-1], destination.shape[-1] - source.shape[-1]
        )
        source = torch.cat([source, pad], dim=-1)
    return destination, source


_ = Image  # PIL is what `pillow` wraps
