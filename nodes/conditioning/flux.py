"""Text encoding and CONDITIONING transforms (ComfyUI's nodes of the same names).

A CONDITIONING value is a list of `[context [B, T, D], options dict]` entries. Nodes here never
mutate what they receive: every entry they change is a new list with a copied dict.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from executor.schema import (
    MAX_RESOLUTION,
    Boolean,
    Combo,
    Float,
    Int,
    Node,
    Output,
    Schema,
    String,
    Typed,
)
from nodes.latent import vae_ops
from nodes.runtime.device import text_encoders_working_bytes, use_models
from nodes.runtime.services import Ctx
from nodes.runtime.types import CONDITIONING

log = logging.getLogger(__name__)

Conditioning = list[list[Any]]
REFERENCE_METHODS = ("offset", "index", "uxo/uno")


def set_values(
    conditioning: Conditioning, values: Mapping[str, Any], *, append: bool = False
) -> Conditioning:
    """A copy of `conditioning` with `values` set in every entry's dict.

    With `append`, list values are concatenated after an existing list under the same key.
    """
    out = []
    for context, options in conditioning:
        options = dict(options)
        for key, value in values.items():
            old = options.get(key) if append else None
            options[key] = old + value if old is not None else value
        out.append([context, options])
    return out


def encode_text(ctx: Ctx, clip: Any, clip_text: str, t5_text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode with a CLIP handle: (T5 context [1, T, D], CLIP-L pooled [1, 768]), float32 on the CPU."""
    if clip is None:
        raise RuntimeError(
            "clip input is invalid: None. If it comes from a checkpoint loader, the checkpoint "
            "holds no text encoders; load them with DualCLIPLoader instead."
        )
    from models.text.encode import encode_flux_prompt

    # the handle carries its patches; DualCLIPLoader's device "cpu" keeps the encoders off the compute device
    with use_models(ctx, clip, working_bytes=text_encoders_working_bytes(clip, clip.t5_max_length or 256)):
        return encode_flux_prompt(clip.encoders, clip_text, t5_text, t5_max_length=clip.t5_max_length)


class CLIPTextEncode(Node):
    schema = Schema(
        "CLIPTextEncode",
        category="conditioning",
        outputs=(Output("CONDITIONING"),),
        description="Encodes a text prompt with the CLIP (FLUX: CLIP-L + T5) model into a conditioning.",
        inputs=(
            String("text", multiline=True, dynamic_prompts=True, tooltip="The text to be encoded."),
            Typed("clip", "CLIP", tooltip="The CLIP model used for encoding the text."),
        ),
    )

    @classmethod
    def execute(cls, ctx: Ctx, text: str, clip: Any) -> tuple[Conditioning]:
        context, pooled = encode_text(ctx, clip, text, text)
        return ([[context, {"pooled_output": pooled}]],)


class CLIPTextEncodeFlux(Node):
    schema = Schema(
        "CLIPTextEncodeFlux",
        category="advanced/conditioning/flux",
        outputs=(CONDITIONING,),
        inputs=(
            Typed("clip", "CLIP"),
            String("clip_l", multiline=True, dynamic_prompts=True),
            String("t5xxl", multiline=True, dynamic_prompts=True),
            Float("guidance", 3.5, min=0.0, max=100.0, step=0.1),
        ),
    )

    @classmethod
    def execute(cls, ctx: Ctx, clip: Any, clip_l: str, t5xxl: str, guidance: float) -> tuple[Conditioning]:
        context, pooled = encode_text(ctx, clip, clip_l, t5xxl)
        return ([[context, {"pooled_output": pooled, "guidance": guidance}]],)


class FluxGuidance(Node):
    schema = Schema(
        "FluxGuidance",
        category="advanced/conditioning/flux",
        outputs=(CONDITIONING,),
        inputs=(Typed("conditioning", "CONDITIONING"), Float("guidance", 3.5, min=0.0, max=100.0, step=0.1)),
    )

    @classmethod
    def execute(cls, conditioning: Conditioning, guidance: float) -> tuple[Conditioning]:
        return (set_values(conditioning, {"guidance": guidance}),)


class ConditioningZeroOut(Node):
    schema = Schema(
        "ConditioningZeroOut",
        category="advanced/conditioning",
        outputs=(CONDITIONING,),
        inputs=(Typed("conditioning", "CONDITIONING"),),
    )

    @classmethod
    def execute(cls, conditioning: Conditioning) -> tuple[Conditioning]:
        out = []
        for context, options in conditioning:
            options = dict(options)
            if options.get("pooled_output") is not None:
                options["pooled_output"] = torch.zeros_like(options["pooled_output"])
            out.append([torch.zeros_like(context), options])
        return (out,)


class ConditioningCombine(Node):
    schema = Schema(
        "ConditioningCombine",
        category="conditioning",
        outputs=(CONDITIONING,),
        inputs=(Typed("conditioning_1", "CONDITIONING"), Typed("conditioning_2", "CONDITIONING")),
    )

    @classmethod
    def execute(cls, conditioning_1: Conditioning, conditioning_2: Conditioning) -> tuple[Conditioning]:
        return (list(conditioning_1) + list(conditioning_2),)


class ConditioningSetTimestepRange(Node):
    schema = Schema(
        "ConditioningSetTimestepRange",
        category="advanced/conditioning",
        outputs=(CONDITIONING,),
        inputs=(
            Typed("conditioning", "CONDITIONING"),
            Float("start", 0.0, min=0.0, max=1.0, step=0.001),
            Float("end", 1.0, min=0.0, max=1.0, step=0.001),
        ),
    )

    @classmethod
    def execute(cls, conditioning: Conditioning, start: float, end: float) -> tuple[Conditioning]:
        return (set_values(conditioning, {"start_percent": start, "end_percent": end}),)


class ConditioningSetArea(Node):
    schema = Schema(
        "ConditioningSetArea",
        category="conditioning",
        outputs=(CONDITIONING,),
        description="Sets an area for the conditioning. FLUX models ignore areas: the conditioning applies "
        "to the whole image.",
        inputs=(
            Typed("conditioning", "CONDITIONING"),
            Int("width", 64, min=64, max=MAX_RESOLUTION, step=8),
            Int("height", 64, min=64, max=MAX_RESOLUTION, step=8),
            Int("x", 0, min=0, max=MAX_RESOLUTION, step=8),
            Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
            Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
        ),
    )

    @classmethod
    def execute(
        cls, conditioning: Conditioning, width: int, height: int, x: int, y: int, strength: float
    ) -> tuple[Conditioning]:
        # Recorded as ComfyUI does so custom nodes can read it, but our FLUX sampler does not
        # restrict conditioning to areas.
        log.warning(
            "ConditioningSetArea: FLUX sampling ignores conditioning areas; the %dx%d area at "
            "(%d, %d) applies to the whole image",
            width,
            height,
            x,
            y,
        )
        return (
            set_values(
                conditioning,
                {
                    "area": (height // 8, width // 8, y // 8, x // 8),
                    "strength": strength,
                    "set_area_to_bounds": False,
                },
            ),
        )


class ReferenceLatent(Node):
    schema = Schema(
        "ReferenceLatent",
        category="advanced/conditioning/edit_models",
        outputs=(CONDITIONING,),
        description="Sets the guiding latent for an edit model (FLUX Kontext). Chain several to add several "
        "reference images.",
        inputs=(Typed("conditioning", "CONDITIONING"), Typed("latent", "LATENT", optional=True)),
    )

    @classmethod
    def execute(
        cls, conditioning: Conditioning, latent: Mapping[str, Any] | None = None
    ) -> tuple[Conditioning]:
        if latent is None:
            return (conditioning,)
        return (set_values(conditioning, {"reference_latents": [latent["samples"]]}, append=True),)


class FluxKontextMultiReferenceLatentMethod(Node):
    schema = Schema(
        "FluxKontextMultiReferenceLatentMethod",
        category="advanced/conditioning/flux",
        experimental=True,
        outputs=(CONDITIONING,),
        inputs=(Typed("conditioning", "CONDITIONING"), Combo("reference_latents_method", REFERENCE_METHODS)),
    )

    @classmethod
    def execute(cls, conditioning: Conditioning, reference_latents_method: str) -> tuple[Conditioning]:
        method = (
            "uxo"
            if "uxo" in reference_latents_method or "uso" in reference_latents_method
            else reference_latents_method
        )
        return (set_values(conditioning, {"reference_latents_method": method}),)


class InstructPixToPixConditioning(Node):
    schema = Schema(
        "InstructPixToPixConditioning",
        category="conditioning/instructpix2pix",
        outputs=(
            Output("CONDITIONING", "positive"),
            Output("CONDITIONING", "negative"),
            Output("LATENT", "latent"),
        ),
        description="Adds the VAE latent of a control image (FLUX Canny/Depth: the edge or depth map) to both "
        "conditionings and gives an empty latent of its size.",
        inputs=(
            Typed("positive", "CONDITIONING"),
            Typed("negative", "CONDITIONING"),
            Typed("vae", "VAE"),
            Typed("pixels", "IMAGE"),
        ),
    )

    @classmethod
    def execute(
        cls, ctx: Ctx, positive: Conditioning, negative: Conditioning, vae: Any, pixels: torch.Tensor
    ) -> tuple[Conditioning, Conditioning, dict[str, Any]]:
        concat = vae_ops.encode(ctx, vae, vae_ops.crop_to_multiple(pixels))
        values = {"concat_latent_image": concat}
        return (
            set_values(positive, values),
            set_values(negative, values),
            {"samples": torch.zeros_like(concat)},
        )


class InpaintModelConditioning(Node):
    schema = Schema(
        "InpaintModelConditioning",
        category="conditioning/inpaint",
        outputs=(
            Output("CONDITIONING", "positive"),
            Output("CONDITIONING", "negative"),
            Output("LATENT", "latent"),
        ),
        description="For inpainting models (FLUX Fill): adds the image with the masked area greyed out and the "
        "mask to both conditionings; the latent is the encoded image.",
        inputs=(
            Typed("positive", "CONDITIONING"),
            Typed("negative", "CONDITIONING"),
            Typed("vae", "VAE"),
            Typed("pixels", "IMAGE"),
            Typed("mask", "MASK"),
            Boolean(
                "noise_mask",
                True,
                tooltip="Add a noise mask to the latent so sampling will only happen "
                "within the mask. Might improve results or completely break things depending on the model.",
            ),
        ),
    )

    @classmethod
    def execute(
        cls,
        ctx: Ctx,
        positive: Conditioning,
        negative: Conditioning,
        vae: Any,
        pixels: torch.Tensor,
        mask: torch.Tensor,
        noise_mask: bool = True,
    ) -> tuple[Conditioning, Conditioning, dict[str, Any]]:
        height, width = pixels.shape[1], pixels.shape[2]
        mask = F.interpolate(
            mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float(), size=(height, width), mode="bilinear"
        )
        cropped = vae_ops.crop_to_multiple(pixels)
        if cropped.shape[1:3] != pixels.shape[1:3]:
            dy, dx = (height % 8) // 2, (width % 8) // 2
            mask = mask[:, :, dy : dy + cropped.shape[1], dx : dx + cropped.shape[2]]
        keep = (1.0 - mask.round()).squeeze(1).unsqueeze(-1)  # [B, H, W, 1]; 0 where the model paints
        greyed = (cropped[..., :3] - 0.5) * keep + 0.5  # masked pixels -> mid grey, as FLUX Fill expects
        concat = vae_ops.encode(ctx, vae, greyed)
        latent: dict[str, Any] = {"samples": vae_ops.encode(ctx, vae, pixels)}
        if noise_mask:
            latent["noise_mask"] = mask
        values = {"concat_latent_image": concat, "concat_mask": mask}
        return set_values(positive, values), set_values(negative, values), latent


NODES = (
    CLIPTextEncode,
    CLIPTextEncodeFlux,
    FluxGuidance,
    ConditioningZeroOut,
    ConditioningCombine,
    ConditioningSetTimestepRange,
    ConditioningSetArea,
    ReferenceLatent,
    FluxKontextMultiReferenceLatentMethod,
    InstructPixToPixConditioning,
    InpaintModelConditioning,
)
