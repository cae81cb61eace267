"""Vision encoders through transformers: the CLIP ViT-L/14 tower with projection and SigLIP (so400m-patch14-384).

Parameters are read from a file's shapes (ComfyUI `clip_vision/` single files and transformers folders
use the same HF key names); the module is built on the meta device and its weights assigned lazily.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    SiglipVisionConfig,
    SiglipVisionModel,
)

CLIP_VISION, SIGLIP = "clip_vision", "siglip"
# Every released tower of these families uses 64-wide heads except SigLIP so400m (16 heads of 72).
_KNOWN_HEADS = {(SIGLIP, 1152): 16, (CLIP_VISION, 1024): 16, (CLIP_VISION, 1280): 16, (CLIP_VISION, 1664): 16}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
# (patch grid side, patch) -> input size where the convolution drops a remainder (384 / 14 = 27.4)
_RELEASED_SIZES = {(27, 14): 384, (36, 14): 512}
_LAYER = re.compile(r"vision_model\.encoder\.layers\.(\d+)\.")


@dataclass(frozen=True)
class VisionParams:
    """One vision tower: family, widths, depth, input size; `projection_dim` 0 = no projection."""

    family: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    image_size: int
    patch_size: int
    projection_dim: int = 0
    use_head: bool = False

    def __post_init__(self) -> None:
        if self.family not in (CLIP_VISION, SIGLIP):
            raise ValueError(f"vision family {self.family!r} is not {CLIP_VISION!r} or {SIGLIP!r}")
        if self.hidden_size % self.num_heads or self.image_size < self.patch_size:
            raise ValueError(f"inconsistent vision tower sizes: {self}")

    @property
    def mean(self) -> tuple[float, float, float]:
        return CLIP_MEAN if self.family == CLIP_VISION else SIGLIP_MEAN

    @property
    def std(self) -> tuple[float, float, float]:
        return CLIP_STD if self.family == CLIP_VISION else SIGLIP_STD

    @property
    def crop_default(self) -> bool:
        """CLIP's processor resizes the short side and center-crops; SigLIP's squashes."""
        return self.family == CLIP_VISION


CLIP_VIT_L14 = VisionParams(CLIP_VISION, 1024, 4096, 24, 16, 224, 14, projection_dim=768)
SIGLIP_SO400M_384 = VisionParams(SIGLIP, 1152, 4304, 27, 16, 384, 14, use_head=True)


def vision_family(keys: Mapping[str, Any] | set[str]) -> str | None:
    """CLIP (class embedding, pre-layernorm) or SigLIP (neither) from HF vision-tower keys; None otherwise."""
    if "vision_model.embeddings.patch_embedding.weight" not in keys:
        return None
    return CLIP_VISION if "vision_model.embeddings.class_embedding" in keys else SIGLIP


def vision_params_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> VisionParams:
    """VisionParams from `key -> shape` of an HF-named vision tower (see `vision_family`)."""
    family = vision_family(shapes)
    if family is None:
        raise ValueError(
            "no vision_model.embeddings.patch_embedding.weight: not a CLIP / SigLIP vision tower"
        )
    hidden, _, patch, _ = shapes["vision_model.embeddings.patch_embedding.weight"]
    positions = shapes["vision_model.embeddings.position_embedding.weight"][0] - (family == CLIP_VISION)
    side = round(positions**0.5)
    if side * side != positions:
        raise ValueError(f"{positions} patch positions is not a square grid")
    layers = {int(m.group(1)) for k in shapes if (m := _LAYER.match(k))}
    projection = shapes.get("visual_projection.weight", (0, 0))[0]
    return VisionParams(
        family=family,
        hidden_size=hidden,
        intermediate_size=shapes["vision_model.encoder.layers.0.mlp.fc1.weight"][0],
        num_layers=len(layers),
        num_heads=_KNOWN_HEADS.get((family, hidden), max(1, hidden // 64)),
        image_size=_RELEASED_SIZES.get((side, patch), side * patch),
        patch_size=patch,
        projection_dim=projection,
        use_head="vision_model.head.probe" in shapes,
    )


def build_vision_tower(params: VisionParams) -> nn.Module:
    """The transformers module (random init; build under `torch.device("meta")` to skip it)."""
    if params.family == CLIP_VISION:
        return CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=params.hidden_size,
                intermediate_size=params.intermediate_size,
                num_hidden_layers=params.num_layers,
                num_attention_heads=params.num_heads,
                image_size=params.image_size,
                patch_size=params.patch_size,
                projection_dim=params.projection_dim or params.hidden_size,
                hidden_act="quick_gelu",
            )
        )
    return SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=params.hidden_size,
            intermediate_size=params.intermediate_size,
            num_hidden_layers=params.num_layers,
            num_attention_heads=params.num_heads,
            image_size=params.image_size,
            patch_size=params.patch_size,
            hidden_act="gelu_pytorch_tanh",
            vision_use_head=params.use_head,
        )
    )


def materialize_position_ids(module: nn.Module) -> None:
    """Fill the non-persistent `position_ids` buffers that meta construction left empty."""
    for sub in module.modules():
        buffer = getattr(sub, "position_ids", None)
        if isinstance(buffer, torch.Tensor) and buffer.is_meta:
            device = next((p.device for p in sub.parameters() if not p.is_meta), torch.device("cpu"))
            sub.register_buffer(
                "position_ids", torch.arange(buffer.shape[-1], device=device).expand(1, -1), persistent=False
            )


@dataclass(frozen=True, eq=False)
class VisionOutput:
    """CLIP_VISION_OUTPUT: `last_hidden_state` [B, N, hidden] (SigLIP: after the post-layernorm),
    `penultimate_hidden_states` [B, N, hidden], `image_embeds` [B, projection_dim] (CLIP) or the pooled
    output (SigLIP). Item access (`out["image_embeds"]`) works as with ComfyUI's output object."""

    last_hidden_state: torch.Tensor
    penultimate_hidden_states: torch.Tensor
    image_embeds: torch.Tensor

    def __getitem__(self, key: str) -> torch.Tensor:
        return getattr(self, key)


def encode_pixels(tower: nn.Module, params: VisionParams, pixels: torch.Tensor) -> VisionOutput:
    """Run a tower on preprocessed pixels [B, 3, S, S] (see `models.vision.preprocess`)."""
    dtype = next(p.dtype for p in tower.parameters())
    with torch.no_grad():
        out = tower(pixel_values=pixels.to(dtype), output_hidden_states=True)
    if params.family == CLIP_VISION:
        embeds = out.image_embeds
    else:
        embeds = out.pooler_output if out.pooler_output is not None else out.last_hidden_state.mean(dim=1)
    return VisionOutput(out.last_hidden_state, out.hidden_states[-2], embeds)
