"""The trained LoRA as a value: TrainedLora (ComfyUI's LORA_MODEL), writing it with its resume state,
and ComfyUI's LoraModelLoader / SaveLoRA nodes that apply or save it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from executor.schema import Boolean, Float, Int, Node, NodeOutput, Output, Schema, String, Typed
from models.patches import ModelHandle
from models.training.checkpoint import TrainState, save_safetensors, save_state, state_path_for
from models.training.export import lora_patches, to_key_style
from nodes.runtime.file_paths import save_folder, save_target
from nodes.runtime.services import Ctx

log = logging.getLogger(__name__)


class TrainedLora(dict):  # type: ignore[type-arg]
    """LORA_MODEL: file-form tensors (ComfyUI keys) + the metadata and resume state to save with them."""

    metadata: dict[str, str]
    state: TrainState | None


def write_lora(path: Path, lora: Mapping[str, torch.Tensor]) -> Path:
    """The LoRA file (atomic) and, when the LoRA carries one, its resume state beside it."""
    metadata = dict(getattr(lora, "metadata", {}) or {})
    save_safetensors(path, to_key_style(lora, metadata.get("fluxloom.key_style", "comfyui")), metadata)
    state = getattr(lora, "state", None)
    if state is not None:
        save_state(state_path_for(path), state)
    return path


class LoraModelLoader(Node):
    schema = Schema(
        "LoraModelLoader", display_name="Load LoRA Model", category="model/loaders", experimental=True,
        inputs=(Typed("model", "MODEL", tooltip="The diffusion model the LoRA will be applied to."),
                Typed("lora", "LORA_MODEL", tooltip="The LoRA model to apply to the diffusion model."),
                Float("strength_model", 1.0, min=-100.0, max=100.0,
                      tooltip="How strongly to modify the diffusion model. This value can be negative."),
                Boolean("bypass", False, tooltip="Apply as forward-time adapters instead of editing weights.")),
        outputs=(Output("MODEL", "model", tooltip="The modified diffusion model."),),
    )  # fmt: skip

    @classmethod
    def execute(cls, model: ModelHandle, lora: Mapping[str, torch.Tensor], strength_model: float,
                bypass: bool = False) -> tuple[ModelHandle]:  # fmt: skip
        if strength_model == 0:
            return (model,)
        out = model.with_patches(*lora_patches(lora, strength_model, source="trained LoRA"))
        if bypass:
            from models.patching import BYPASS_OPTION

            out = out.with_options(extras={**dict(out.options.extras), BYPASS_OPTION: True})
        return (out,)


class SaveLoRA(Node):
    schema = Schema(
        "SaveLoRA", display_name="Save LoRA Weights", category="model/loaders", experimental=True,
        is_output_node=True,
        inputs=(Typed("lora", "LORA_MODEL", tooltip="The LoRA model to save."),
                String("prefix", "loras/ComfyUI_trained_lora", tooltip="The prefix to use for the saved LoRA file."),
                Int("steps", optional=True, min=0, max=2**31 - 1,
                    tooltip="Optional: the number of steps the LoRA was trained for, used in the file name.")),
        outputs=(),
    )  # fmt: skip

    @classmethod
    def execute(
        cls, ctx: Ctx, lora: Mapping[str, torch.Tensor], prefix: str, steps: int | None = None
    ) -> NodeOutput:
        target = save_target(save_folder(ctx.services.settings, "output"), prefix)
        middle = f"_{steps}_steps" if steps is not None else ""
        path = target.folder / f"{target.name}{middle}_{target.counter:05}_.safetensors"
        write_lora(path, lora)
        log.info("saved LoRA %s", path)
        sub = f"{target.subfolder}/" if target.subfolder else ""
        return NodeOutput.of(ui={"text": [f"{sub}{path.name}"]})


NODES = (LoraModelLoader, SaveLoRA)
