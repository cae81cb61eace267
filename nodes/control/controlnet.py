"""ControlNet nodes (ComfyUI's names, inputs and defaults): loaders, apply nodes, union type.

An applied ControlNet travels in the CONDITIONING dicts as ComfyUI's does: entry["control"] holds a
`ControlApplication` whose `previous` is the control the entry had before, and positive and
negative entries that had the same previous control share one application.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from executor.schema import Combo, Float, Node, Output, Schema, Typed
from models.control.apply import ControlApplication, ControlNetHandle
from models.control.load import load_controlnet
from models.imaging.resize import resize
from models.patches import ModelHandle
from nodes.loaders.model_files import files_in, model_paths
from nodes.runtime.services import Ctx
from nodes.runtime.types import CONDITIONING

log = logging.getLogger(__name__)

Conditioning = list[list[Any]]
CONTROL_NET = Output("CONTROL_NET")
# ComfyUI's SetUnionControlNetType names (the SDXL union table; only the index reaches the model).
UNION_CONTROLNET_TYPES = {
    "openpose": 0,
    "depth": 1,
    "hed/pidi/scribble/ted": 2,
    "canny/lineart/anime_lineart/mlsd": 3,
    "normal": 4,
    "segment": 5,
    "tile": 6,
    "repaint": 7,
}


def _load(ctx: Ctx, name: str) -> ControlNetHandle:
    path = model_paths(ctx).resolve("controlnet", name)
    return ControlNetHandle(load_controlnet(path), source=path)


def apply_controlnet(
    positive: Conditioning,
    negative: Conditioning | None,
    control_net: ControlNetHandle,
    image: torch.Tensor,
    strength: float,
    start_percent: float = 0.0,
    end_percent: float = 1.0,
    *,
    vae: Any = None,
    extra_concat: tuple[torch.Tensor, ...] = (),
) -> tuple[Conditioning, Conditioning | None]:
    """New conditionings whose entries carry `control_net` with this hint, chained on their previous control.

    image: IMAGE [B, H, W, C] in 0..1. strength 0 returns the inputs unchanged (ComfyUI).
    """
    if strength == 0:
        return positive, negative
    hint = image.movedim(-1, 1)
    made: dict[int, ControlApplication] = {}
    out: list[Conditioning | None] = []
    for conditioning in (positive, negative):
        if conditioning is None:
            out.append(None)
            continue
        entries = []
        for context, options in conditioning:
            previous = options.get("control")
            key = id(previous)
            if key not in made:
                made[key] = ControlApplication(
                    control_net,
                    hint,
                    strength,
                    start_percent,
                    end_percent,
                    vae=vae,
                    extra_concat=extra_concat,
                    previous=previous,
                )
            entries.append([context, {**options, "control": made[key], "control_apply_to_uncond": False}])
        out.append(entries)
    return out[0] or [], out[1]


class ControlNetLoader(Node):
    schema = Schema(
        "ControlNetLoader",
        display_name="Load ControlNet Model",
        category="loaders",
        inputs=(Combo("control_net_name", files_in("controlnet")),),
        outputs=(CONTROL_NET,),
        description="Loads a FLUX ControlNet (XLabs, Mistoline, InstantX / Shakker Union, Alimama inpainting).",
    )

    @classmethod
    def execute(cls, ctx: Ctx, control_net_name: str) -> tuple[ControlNetHandle]:
        return (_load(ctx, control_net_name),)


class DiffControlNetLoader(Node):
    schema = Schema(
        "DiffControlNetLoader",
        display_name="Load ControlNet Model (diff)",
        category="loaders",
        inputs=(Typed("model", "MODEL"), Combo("control_net_name", files_in("controlnet"))),
        outputs=(CONTROL_NET,),
    )

    @classmethod
    def execute(cls, ctx: Ctx, model: ModelHandle, control_net_name: str) -> tuple[ControlNetHandle]:
        # "diff" ControlNets store weights relative to an SD1 UNet; FLUX ControlNets are complete files.
        return (_load(ctx, control_net_name),)


def _strength() -> Any:
    return Float("strength", 1.0, min=0.0, max=10.0, step=0.01)


def _window() -> tuple[Any, Any]:
    return (
        Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001),
        Float("end_percent", 1.0, min=0.0, max=1.0, step=0.001),
    )


_PAIR = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))


class ControlNetApplyAdvanced(Node):
    schema = Schema(
        "ControlNetApplyAdvanced",
        display_name="Apply ControlNet",
        category="conditioning/controlnet",
        inputs=(
            Typed("positive", "CONDITIONING"),
            Typed("negative", "CONDITIONING"),
            Typed("control_net", "CONTROL_NET"),
            Typed("image", "IMAGE"),
            _strength(),
            *_window(),
            Typed("vae", "VAE", optional=True),
        ),
        outputs=_PAIR,
    )

    @classmethod
    def execute(
        cls,
        positive: Conditioning,
        negative: Conditioning,
        control_net: ControlNetHandle,
        image: torch.Tensor,
        strength: float,
        start_percent: float,
        end_percent: float,
        vae: Any = None,
    ) -> tuple[Conditioning, Conditioning]:
        pos, neg = apply_controlnet(
            positive, negative, control_net, image, strength, start_percent, end_percent, vae=vae
        )
        return pos, neg if neg is not None else []


class ControlNetApply(Node):
    schema = Schema(
        "ControlNetApply",
        display_name="Apply ControlNet (OLD)",
        category="conditioning/controlnet",
        deprecated=True,
        inputs=(
            Typed("conditioning", "CONDITIONING"),
            Typed("control_net", "CONTROL_NET"),
            Typed("image", "IMAGE"),
            _strength(),
        ),
        outputs=(CONDITIONING,),
    )

    @classmethod
    def execute(
        cls, conditioning: Conditioning, control_net: ControlNetHandle, image: torch.Tensor, strength: float
    ) -> tuple[Conditioning]:
        return (apply_controlnet(conditioning, None, control_net, image, strength)[0],)


class SetUnionControlNetType(Node):
    schema = Schema(
        "SetUnionControlNetType",
        category="conditioning/controlnet",
        inputs=(Typed("control_net", "CONTROL_NET"), Combo("type", ("auto", *UNION_CONTROLNET_TYPES))),
        outputs=(CONTROL_NET,),
    )

    @classmethod
    def execute(cls, control_net: ControlNetHandle, type: str) -> tuple[ControlNetHandle]:
        index = UNION_CONTROLNET_TYPES.get(type, -1)
        return (control_net.with_control_type([index] if index >= 0 else []),)


class ControlNetInpaintingAliMamaApply(Node):
    schema = Schema(
        "ControlNetInpaintingAliMamaApply",
        category="conditioning/controlnet",
        inputs=(
            Typed("positive", "CONDITIONING"),
            Typed("negative", "CONDITIONING"),
            Typed("control_net", "CONTROL_NET"),
            Typed("vae", "VAE"),
            Typed("image", "IMAGE"),
            Typed("mask", "MASK"),
            _strength(),
            *_window(),
        ),
        outputs=_PAIR,
    )

    @classmethod
    def execute(
        cls,
        positive: Conditioning,
        negative: Conditioning,
        control_net: ControlNetHandle,
        vae: Any,
        image: torch.Tensor,
        mask: torch.Tensor,
        strength: float,
        start_percent: float,
        end_percent: float,
    ) -> tuple[Conditioning, Conditioning]:
        extra: tuple[torch.Tensor, ...] = ()
        if control_net.params.concat_mask:
            # keep-mask (1 = keep); the region to inpaint is blacked out in the hint image
            keep = 1.0 - mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
            applied = resize(keep, image.shape[2], image.shape[1], "bilinear", "center").round()
            image = image * applied.movedim(1, -1).repeat(1, 1, 1, image.shape[3])
            extra = (keep,)
        pos, neg = apply_controlnet(
            positive,
            negative,
            control_net,
            image,
            strength,
            start_percent,
            end_percent,
            vae=vae,
            extra_concat=extra,
        )
        return pos, neg if neg is not None else []


NODES = (
    ControlNetLoader,
    DiffControlNetLoader,
    ControlNetApplyAdvanced,
    ControlNetApply,
    SetUnionControlNetType,
    ControlNetInpaintingAliMamaApply,
)
