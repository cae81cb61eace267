"""CheckpointSave and ModelSave: write a model with its patches (LoRAs, merges) baked in.

Files go under the output folder like ComfyUI's: `filename_prefix` (default "checkpoints/ComfyUI"
or "diffusion_models/ComfyUI") + `_00001_.safetensors`, the counter continuing past existing files.
CheckpointSave writes an all-in-one checkpoint (model, both text encoders, VAE); ModelSave the
diffusion model alone under `model.diffusion_model.`. Both embed the prompt and workflow JSON as
safetensors metadata unless --disable-metadata. Patched values come from the unpatched base
tensors (the memory manager puts its masters back first) through `patched_weight`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from executor.schema import PROMPT_HIDDEN, Node, NodeOutput, Schema, String, Typed
from models.lora.bake import checkpoint_state, unshared
from models.patches import ClipHandle, ModelHandle, VaeHandle
from nodes.lora.merge import base_tensors
from nodes.runtime.file_paths import save_folder, save_target
from nodes.runtime.services import Ctx

log = logging.getLogger(__name__)
CATEGORY = "advanced/model_merging"


def _metadata(ctx: Ctx, prompt: Any, extra_pnginfo: Mapping[str, Any] | None) -> dict[str, str]:
    if ctx.services.settings.disable_metadata:
        return {}
    metadata = {}
    if prompt is not None:
        metadata["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        metadata[key] = json.dumps(value)
    return metadata


def write_checkpoint(
    ctx: Ctx, filename_prefix: str, state: dict[str, torch.Tensor], metadata: dict[str, str]
) -> Path:
    """`state` saved as the next `<prefix>_NNNNN_.safetensors` under the output folder."""
    target = save_target(save_folder(ctx.services.settings, "output"), filename_prefix)
    path = target.folder / target.filename(target.counter, 0, "safetensors")
    save_file(unshared(state), str(path), metadata=metadata)
    log.info("saved %d tensors to %s", len(state), path)
    return path


class CheckpointSave(Node):
    schema = Schema(
        "CheckpointSave",
        display_name="Save Checkpoint",
        category=CATEGORY,
        inputs=(
            Typed("model", "MODEL"),
            Typed("clip", "CLIP"),
            Typed("vae", "VAE"),
            String("filename_prefix", "checkpoints/ComfyUI"),
        ),
        hidden=PROMPT_HIDDEN,
        is_output_node=True,
        python_module="comfy_extras.nodes_model_merging",
    )

    @classmethod
    def execute(
        cls,
        ctx: Ctx,
        model: ModelHandle,
        clip: ClipHandle,
        vae: VaeHandle,
        filename_prefix: str,
        prompt: Any = None,
        extra_pnginfo: Any = None,
    ) -> NodeOutput:
        encoders = clip.encoders if clip is not None else None
        text = {}
        for attr in ("clip", "t5"):
            module = getattr(encoders, attr, None)
            if module is not None:
                text[attr] = (base_tensors(ctx, clip, module), clip.patches)
        state = checkpoint_state(
            model=(base_tensors(ctx, model), model.patches),
            clip=text.get("clip"),
            t5=text.get("t5"),
            vae=(base_tensors(ctx, vae), vae.patches) if vae is not None else None,
        )
        write_checkpoint(ctx, filename_prefix, state, _metadata(ctx, prompt, extra_pnginfo))
        return NodeOutput.of()


class ModelSave(Node):
    schema = Schema(
        "ModelSave",
        category=CATEGORY,
        inputs=(Typed("model", "MODEL"), String("filename_prefix", "diffusion_models/ComfyUI")),
        hidden=PROMPT_HIDDEN,
        is_output_node=True,
        python_module="comfy_extras.nodes_model_merging",
    )

    @classmethod
    def execute(
        cls, ctx: Ctx, model: ModelHandle, filename_prefix: str, prompt: Any = None, extra_pnginfo: Any = None
    ) -> NodeOutput:
        state = checkpoint_state(model=(base_tensors(ctx, model), model.patches))
        write_checkpoint(ctx, filename_prefix, state, _metadata(ctx, prompt, extra_pnginfo))
        return NodeOutput.of()


NODES = (CheckpointSave, ModelSave)
