"""Which LoRA format each key of a file belongs to (reference §7.2), by key pattern alone.

A file may mix formats (kohya model part with diffusers text-encoder part); keys are split per
format and each part goes to its converter. Keys no rule claims are reported, never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from .formats.bfl_control import is_bfl_control

KOHYA, ONETRAINER, LYCORIS, DIFFUSERS, COMFYUI, XLABS, BFL_CONTROL = (
    "kohya",
    "onetrainer",
    "lycoris",
    "diffusers",
    "comfyui",
    "xlabs",
    "bfl_control",
)
FORMATS = (KOHYA, ONETRAINER, LYCORIS, DIFFUSERS, COMFYUI, XLABS, BFL_CONTROL)

_BFL_ROOTS = (
    "double_blocks.",
    "single_blocks.",
    "img_in.",
    "txt_in.",
    "time_in.",
    "vector_in.",
    "guidance_in.",
    "final_layer.",
)
_DIFFUSERS_ROOTS = (
    "transformer.",
    "text_encoder.",
    "text_encoder_2.",
    "base_model.model.",
    "transformer_blocks.",
    "single_transformer_blocks.",
    "x_embedder.",
    "context_embedder.",
    "time_text_embed.",
    "norm_out.",
    "proj_out.",
)


def key_format(key: str, *, bfl_control: bool = False) -> str | None:
    """The format a single key belongs to (`bfl_control`: the file has the control-LoRA signature)."""
    if key.startswith(("lora_unet_", "lora_te")):
        return KOHYA
    if key.startswith("lora_transformer_"):
        return ONETRAINER
    if key.startswith("lycoris_"):
        return LYCORIS
    if ".processor." in key:
        return XLABS
    if key.startswith(("diffusion_model.", "text_encoders.")):
        return COMFYUI
    if key.startswith(_BFL_ROOTS):
        return BFL_CONTROL if bfl_control else COMFYUI
    if key.startswith(_DIFFUSERS_ROOTS):
        return DIFFUSERS
    return None


def split_by_format(sd: Mapping[str, Tensor]) -> tuple[dict[str, dict[str, Tensor]], list[str]]:
    """{format: its keys' tensors}, and the keys that belong to no known format."""
    control = is_bfl_control(set(sd))
    parts: dict[str, dict[str, Tensor]] = {}
    unknown: list[str] = []
    for key, tensor in sd.items():
        fmt = key_format(key, bfl_control=control)
        if fmt is None:
            unknown.append(key)
        else:
            parts.setdefault(fmt, {})[key] = tensor
    if ONETRAINER in parts and KOHYA in parts and not any(k.startswith("lora_unet_") for k in parts[KOHYA]):
        parts[ONETRAINER].update(parts.pop(KOHYA))  # OneTrainer's text-encoder keys use kohya's prefixes
    return parts, unknown


def detect_formats(keys: Mapping[str, Tensor]) -> tuple[str, ...]:
    """The formats present in a LoRA state dict, in `FORMATS` order."""
    found = split_by_format(keys)[0]
    return tuple(f for f in FORMATS if f in found)
