"""CLIP-vision and Redux nodes (ComfyUI's names, inputs and defaults): CLIPVisionLoader, CLIPVisionEncode,
StyleModelLoader, StyleModelApply."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from executor.schema import Combo, Float, Node, Output, Schema, Typed
from models.control.redux import ReduxImageEncoder, load_redux
from models.vision.load import LoadedVision, load_vision_tower
from models.vision.preprocess import vision_preprocess
from models.vision.towers import VisionOutput, encode_pixels
from nodes.loaders.model_files import files_in, model_paths
from nodes.runtime.device import compute_device, use_models
from nodes.runtime.services import Ctx
from nodes.runtime.types import CONDITIONING

Conditioning = list[list[Any]]
CLIP_VISION = Output("CLIP_VISION")
CLIP_VISION_OUTPUT = Output("CLIP_VISION_OUTPUT")
STYLE_MODEL = Output("STYLE_MODEL")


@dataclass(frozen=True, eq=False)
class ClipVisionHandle:
    """CLIP_VISION: a loaded vision tower and the file it came from."""

    vision: LoadedVision
    source: Path | None = None


@dataclass(frozen=True, eq=False)
class StyleModelHandle:
    """STYLE_MODEL: a Redux image encoder and the file it came from."""

    module: ReduxImageEncoder
    source: Path | None = None


def encode_image(ctx: Ctx, clip_vision: ClipVisionHandle, image: torch.Tensor, *, crop: bool) -> VisionOutput:
    """IMAGE [B, H, W, C] -> VisionOutput (float32, CPU) with the tower's own preprocessing."""
    params, module = clip_vision.vision.params, clip_vision.vision.module
    pixels = vision_preprocess(image, params.image_size, params.mean, params.std, crop=crop)
    with use_models(ctx, module):
        out = encode_pixels(module, params, pixels.to(compute_device(ctx, module)))
    return VisionOutput(
        *(t.float().cpu() for t in (out.last_hidden_state, out.penultimate_hidden_states, out.image_embeds))
    )


class CLIPVisionLoader(Node):
    schema = Schema(
        "CLIPVisionLoader",
        display_name="Load CLIP Vision",
        category="loaders",
        inputs=(Combo("clip_name", files_in("clip_vision")),),
        outputs=(CLIP_VISION,),
    )

    @classmethod
    def execute(cls, ctx: Ctx, clip_name: str) -> tuple[ClipVisionHandle]:
        path = model_paths(ctx).resolve("clip_vision", clip_name)
        return (ClipVisionHandle(load_vision_tower(path), path),)


class CLIPVisionEncode(Node):
    schema = Schema(
        "CLIPVisionEncode",
        display_name="CLIP Vision Encode",
        category="conditioning",
        inputs=(
            Typed("clip_vision", "CLIP_VISION"),
            Typed("image", "IMAGE"),
            Combo("crop", ("center", "none")),
        ),
        outputs=(CLIP_VISION_OUTPUT,),
    )

    @classmethod
    def execute(
        cls, ctx: Ctx, clip_vision: ClipVisionHandle, image: torch.Tensor, crop: str
    ) -> tuple[VisionOutput]:
        return (encode_image(ctx, clip_vision, image, crop=crop == "center"),)


class StyleModelLoader(Node):
    schema = Schema(
        "StyleModelLoader",
        display_name="Load Style Model",
        category="loaders",
        inputs=(Combo("style_model_name", files_in("style_models")),),
        outputs=(STYLE_MODEL,),
    )

    @classmethod
    def execute(cls, ctx: Ctx, style_model_name: str) -> tuple[StyleModelHandle]:
        path = model_paths(ctx).resolve("style_models", style_model_name)
        return (StyleModelHandle(load_redux(path), path),)


def style_tokens(ctx: Ctx, style_model: StyleModelHandle, clip_vision_output: VisionOutput) -> torch.Tensor:
    """Redux tokens [1, B * N, txt_dim] (float32, CPU): every image's tokens in one row, as ComfyUI flattens them."""
    module = style_model.module
    with use_models(ctx, module), torch.no_grad():
        tokens = module(clip_vision_output.last_hidden_state.to(compute_device(ctx, module)))
    return tokens.float().cpu().flatten(0, 1).unsqueeze(0)


def append_style(
    conditioning: Conditioning, tokens: torch.Tensor, strength: float, strength_type: str
) -> Conditioning:
    """Entries with the Redux tokens appended after the text; `attn_bias` (strength != 1) or an existing
    mask adds log(strength) on the new tokens' columns for every other row (ComfyUI's StyleModelApply)."""
    if strength_type == "multiply":
        tokens = tokens * strength
    n = tokens.shape[1]
    out = []
    for context, options in conditioning:
        keys = dict(options)
        if "attention_mask" in keys or (strength_type == "attn_bias" and strength != 1.0):
            bias = (
                math.log(strength)
                if strength_type == "attn_bias" and strength > 0
                else (float("-inf") if strength_type == "attn_bias" else 0.0)
            )
            ref = tuple(keys.get("attention_mask_img_shape", (1, 1)))
            n_ref, n_txt = ref[0] * ref[1], context.shape[1]
            mask = keys.get("attention_mask")
            if mask is None:
                mask = torch.zeros(context.shape[0], n_txt + n_ref, n_txt + n_ref)
            if mask.dtype == torch.bool:
                mask = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
            size = n_txt + n + n_ref
            new = torch.zeros(context.shape[0], size, size)
            new[:, :n_txt, :n_txt] = mask[:, :n_txt, :n_txt]
            new[:, :n_txt, n_txt + n :] = mask[:, :n_txt, n_txt:]
            new[:, n_txt + n :, :n_txt] = mask[:, n_txt:, :n_txt]
            new[:, n_txt + n :, n_txt + n :] = mask[:, n_txt:, n_txt:]
            new[:, :n_txt, n_txt : n_txt + n] = bias
            new[:, n_txt + n :, n_txt : n_txt + n] = bias
            keys["attention_mask"] = new
            keys["attention_mask_img_shape"] = ref
        out.append([torch.cat((context, tokens.to(context).expand(context.shape[0], -1, -1)), dim=1), keys])
    return out


class StyleModelApply(Node):
    schema = Schema(
        "StyleModelApply",
        display_name="Apply Style Model",
        category="conditioning/style_model",
        inputs=(
            Typed("conditioning", "CONDITIONING"),
            Typed("style_model", "STYLE_MODEL"),
            Typed("clip_vision_output", "CLIP_VISION_OUTPUT"),
            Float("strength", 1.0, min=0.0, max=10.0, step=0.001),
            Combo("strength_type", ("multiply", "attn_bias")),
        ),
        outputs=(CONDITIONING,),
    )

    @classmethod
    def execute(
        cls,
        ctx: Ctx,
        conditioning: Conditioning,
        style_model: StyleModelHandle,
        clip_vision_output: VisionOutput,
        strength: float,
        strength_type: str,
    ) -> tuple[Conditioning]:
        tokens = style_tokens(ctx, style_model, clip_vision_output)
        return (append_style(conditioning, tokens, strength, strength_type),)


NODES = (CLIPVisionLoader, CLIPVisionEncode, StyleModelLoader, StyleModelApply)
