"""FLUX ControlNet files: which family a state dict is (by keys) and pure converters to our layout.

Our layout is the XLabs / ComfyUI one (`models.control.model.FluxControlNet`): a BFL-named trunk plus
`controlnet_blocks`, `controlnet_single_blocks`, `pos_embed_input` and an optional
`controlnet_mode_embedder`. diffusers-layout files (InstantX, Shakker Union / Union-Pro / Pro 2.0,
Alimama inpainting) convert their trunk like a transformer and rename `controlnet_x_embedder`;
Mistoline files rename `single_controlnet_blocks`. XLabs files load as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from torch import Tensor

from .diffusers_flux import (
    bfl_flux_group,
    bfl_to_diffusers_transformer,
    diffusers_flux_group,
    diffusers_to_bfl_transformer,
)

XLABS, MISTOLINE, DIFFUSERS = "xlabs", "mistoline", "diffusers"

# diffusers name -> our name, for the tensors outside the shared trunk
_CONTROL_RENAMES = {"controlnet_x_embedder.": "pos_embed_input."}
_CONTROL_PREFIXES = ("controlnet_blocks.", "controlnet_single_blocks.", "controlnet_mode_embedder.")
_MISTOLINE_RENAMES = {"single_controlnet_blocks.": "controlnet_single_blocks."}


def controlnet_kind(keys: Iterable[str]) -> str | None:
    """ "xlabs", "mistoline" or "diffusers" for a FLUX ControlNet state dict's keys, else None.

    The rules are ComfyUI's: `controlnet_blocks.0.weight` with a BFL trunk is XLabs, with
    `controlnet_x_embedder.weight` diffusers-style; `controlnet_blocks.0.linear.weight` is Mistoline.
    """
    keys = set(keys)
    if "controlnet_blocks.0.weight" in keys:
        if "double_blocks.0.img_attn.norm.key_norm.scale" in keys:
            return XLABS
        if "controlnet_x_embedder.weight" in keys:
            return DIFFUSERS
        return None
    if "controlnet_blocks.0.linear.weight" in keys:
        return MISTOLINE
    return None


def _control_key(key: str) -> bool:
    return key.startswith(_CONTROL_PREFIXES) or any(key.startswith(p) for p in _CONTROL_RENAMES)


def diffusers_to_bfl_controlnet(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """diffusers FluxControlNetModel state dict (complete, or whole blocks) -> our layout.

    Raises ValueError for keys neither the trunk nor the control layers have.
    """
    trunk = {k: v for k, v in sd.items() if not _control_key(k)}
    out = diffusers_to_bfl_transformer(trunk)
    for key, tensor in sd.items():
        if not _control_key(key):
            continue
        for old, new in _CONTROL_RENAMES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        out[key] = tensor
    return out


def bfl_to_diffusers_controlnet(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our layout -> diffusers FluxControlNetModel names (exact inverse of `diffusers_to_bfl_controlnet`)."""
    inverse = {new: old for old, new in _CONTROL_RENAMES.items()}
    ours = tuple(inverse) + _CONTROL_PREFIXES
    out = bfl_to_diffusers_transformer({k: v for k, v in sd.items() if not k.startswith(ours)})
    for key, tensor in sd.items():
        if not key.startswith(ours):
            continue
        for new, old in inverse.items():
            if key.startswith(new):
                key = old + key[len(new) :]
        out[key] = tensor
    return out


def mistoline_to_bfl_controlnet(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Mistoline file -> our layout (`single_controlnet_blocks` -> `controlnet_single_blocks`)."""
    out = {}
    for key, tensor in sd.items():
        for old, new in _MISTOLINE_RENAMES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        out[key] = tensor
    return out


def diffusers_controlnet_group(key: str) -> str:
    """Keys `diffusers_to_bfl_controlnet` must see together: one trunk block, else the key itself."""
    return diffusers_flux_group(key)


def bfl_controlnet_group(key: str) -> str:
    """Counterpart of `diffusers_controlnet_group` for `bfl_to_diffusers_controlnet`."""
    return bfl_flux_group(key)


def diffusers_controlnet_config(sd: Mapping[str, Tensor]) -> dict[str, object]:
    """The FluxControlNetModel `config.json` fields that shapes fix, from a diffusers-layout state dict."""
    hidden, in_channels = (int(s) for s in sd["x_embedder.weight"].shape)
    head_dim = (
        int(sd["transformer_blocks.0.attn.norm_q.weight"].shape[0])
        if any(k.startswith("transformer_blocks.") for k in sd)
        else int(sd["single_transformer_blocks.0.attn.norm_q.weight"].shape[0])
    )

    def count(name: str) -> int:
        pattern = re.compile(rf"{name}\.(\d+)\.")
        return len({m.group(1) for k in sd if (m := pattern.match(k))})

    config: dict[str, object] = {
        "_class_name": "FluxControlNetModel",
        "patch_size": 1,
        "in_channels": in_channels,
        "num_layers": count("transformer_blocks"),
        "num_single_layers": count("single_transformer_blocks"),
        "attention_head_dim": head_dim,
        "num_attention_heads": hidden // head_dim,
        "joint_attention_dim": int(sd["context_embedder.weight"].shape[1]),
        "pooled_projection_dim": int(sd["time_text_embed.text_embedder.linear_1.weight"].shape[1]),
        "guidance_embeds": "time_text_embed.guidance_embedder.linear_1.weight" in sd,
        "num_mode": int(sd["controlnet_mode_embedder.weight"].shape[0])
        if "controlnet_mode_embedder.weight" in sd
        else None,
    }
    return config
