"""LoraLoader and LoraLoaderModelOnly (ComfyUI's names, inputs, defaults and outputs).

A LoRA node clones the handles it receives and appends the file's patches at the chosen strengths;
it never touches a module (the memory manager applies patches when weights reach the device).
Chaining nodes stacks LoRAs. Parsed files are kept by `services.loras` (path, mtime, size, model
layout), so a strength edit re-runs the node without reading the file again. Keys that map to no
weight are logged and shown on the node (`ui.text`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from executor.schema import Combo, Float, Node, NodeOutput, Output, Schema, Typed
from models.lora.load import LoraFile, load_lora
from models.lora.targets import LoraTargets
from models.patches import ClipHandle, ModelHandle, WeightPatch
from nodes.loaders.model_files import files_in, model_paths
from nodes.runtime.services import Ctx

log = logging.getLogger(__name__)

STRENGTH = dict(default=1.0, min=-100.0, max=100.0, step=0.01)


def lora_targets(model: ModelHandle | None, clip: ClipHandle | None) -> LoraTargets:
    """What the LoRA may patch: the diffusion model's keys and, with a CLIP, both text encoders'.

    img_in's width comes from the handle's params, not the module: while the memory manager holds a
    widened copy for a Canny/Depth LoRA the module's tensor is wider than the base it patches.
    """
    encoders = clip.encoders if clip is not None else None
    targets = LoraTargets.of(
        model.module if model is not None else None,
        getattr(encoders, "clip", None),
        getattr(encoders, "t5", None),
    )
    width = getattr(model.params, "in_channels", None) if model is not None else None
    img_in = targets.shapes.get("img_in.weight")
    if width is not None and img_in is not None and img_in[1] != width:
        targets = LoraTargets({**targets.shapes, "img_in.weight": (img_in[0], int(width))})
    return targets


def _lora_bytes(lora: LoraFile) -> int:
    seen: set[int] = set()
    total = 0
    for patch in lora.model + lora.clip:
        for t in patch.tensors:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def read_lora(ctx: Ctx | None, lora_name: str, targets: LoraTargets) -> LoraFile:
    """The converted LoRA file `lora_name` from the loras folders, through the app's file cache."""
    path = model_paths(ctx).resolve("loras", lora_name)
    cache = ctx.services.loras if ctx is not None else None
    if cache is None:
        return load_lora(path, targets)
    return cache.get(path, targets.fingerprint, lambda p: load_lora(Path(p), targets), _lora_bytes)


def _patched_model(model: ModelHandle, patches: tuple[WeightPatch, ...]) -> ModelHandle:
    """model + patches; a patch that widens img_in (BFL Canny/Depth LoRA) also widens the params, so
    samplers feed the concat channels as they do for Canny/Depth-dev."""
    handle = model.with_patches(*patches)
    widths = [p.reshape[1] for p in patches if p.key == "img_in.weight" and p.reshape is not None]
    params = handle.params
    if widths and dataclasses.is_dataclass(params) and getattr(params, "in_channels", None) != widths[-1]:
        handle = handle.clone(params=dataclasses.replace(params, in_channels=widths[-1]))  # type: ignore[type-var]
    return handle


def _ui(lora: LoraFile) -> dict[str, list[str]] | None:
    message = lora.warning()
    return {"text": [message]} if message else None


class LoraLoader(Node):
    schema = Schema(
        "LoraLoader",
        display_name="Load LoRA",
        category="loaders",
        description="LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are "
        "denoised such as applying styles. Multiple LoRA nodes can be linked together.",
        inputs=(
            Typed("model", "MODEL", tooltip="The diffusion model the LoRA will be applied to."),
            Typed("clip", "CLIP", tooltip="The CLIP model the LoRA will be applied to."),
            Combo("lora_name", files_in("loras"), tooltip="The name of the LoRA."),
            Float(
                "strength_model",
                **STRENGTH,
                tooltip="How strongly to modify the diffusion model. This value can be negative.",
            ),
            Float(
                "strength_clip",
                **STRENGTH,
                tooltip="How strongly to modify the CLIP model. This value can be negative.",
            ),
        ),
        outputs=(
            Output("MODEL", tooltip="The modified diffusion model."),
            Output("CLIP", tooltip="The modified CLIP model."),
        ),
    )

    @classmethod
    def execute(
        cls,
        ctx: Ctx,
        model: ModelHandle,
        clip: ClipHandle,
        lora_name: str,
        strength_model: float,
        strength_clip: float,
    ) -> NodeOutput:
        if strength_model == 0 and strength_clip == 0:  # ComfyUI returns its inputs untouched
            return NodeOutput.of(model, clip)
        lora = read_lora(ctx, lora_name, lora_targets(model, clip))
        model_patches, clip_patches = lora.at(strength_model, strength_clip)
        new_model = _patched_model(model, model_patches) if strength_model != 0 and model_patches else model
        new_clip = (
            clip.with_patches(*clip_patches)
            if clip is not None and strength_clip != 0 and clip_patches
            else clip
        )
        log.info(
            "LoRA %s: %d model patches at %g, %d text-encoder patches at %g",
            lora_name,
            len(model_patches),
            strength_model,
            len(clip_patches),
            strength_clip,
        )
        return NodeOutput.of(new_model, new_clip, ui=_ui(lora))


class LoraLoaderModelOnly(Node):
    schema = Schema(
        "LoraLoaderModelOnly",
        category="loaders",
        description="Applies a LoRA to the diffusion model only (text-encoder parts of the file are not applied).",
        inputs=(
            Typed("model", "MODEL"),
            Combo("lora_name", files_in("loras")),
            Float("strength_model", **STRENGTH),
        ),
        outputs=(Output("MODEL"),),
    )

    @classmethod
    def execute(cls, ctx: Ctx, model: ModelHandle, lora_name: str, strength_model: float) -> NodeOutput:
        if strength_model == 0:
            return NodeOutput.of(model)
        lora = read_lora(ctx, lora_name, lora_targets(model, None))
        model_patches, _ = lora.at(strength_model, 0.0)
        log.info("LoRA %s: %d model patches at %g", lora_name, len(model_patches), strength_model)
        return NodeOutput.of(_patched_model(model, model_patches), ui=_ui(lora))


NODES = (LoraLoader, LoraLoaderModelOnly)
