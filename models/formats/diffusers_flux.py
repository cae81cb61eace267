"""diffusers FluxTransformer2DModel <-> BFL FLUX.1 state dicts (pure dict -> dict, exact inverses).

Renamed tensors are passed through (no copy); fused ones are concatenated / sliced along dim 0:
diffusers to_q | to_k | to_v make BFL `qkv`, and in single blocks to_q | to_k | to_v | proj_mlp make
`linear1`. diffusers' final norm_out.linear holds (scale, shift), BFL's final adaLN (shift, scale).
Keys a converter must see together (one block) share a group: see `diffusers_flux_group` / `bfl_flux_group`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

DIFFUSERS_TOP_MODULES = {  # diffusers module -> BFL module (weight and bias)
    "x_embedder": "img_in",
    "context_embedder": "txt_in",
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "proj_out": "final_layer.linear",
    "norm_out.linear": "final_layer.adaLN_modulation.1",
}
_SWAPPED = "norm_out.linear"
_DOUBLE = {
    "norm1.linear": "img_mod.lin",
    "norm1_context.linear": "txt_mod.lin",
    "attn.to_out.0": "img_attn.proj",
    "attn.to_add_out": "txt_attn.proj",
    "ff.net.0.proj": "img_mlp.0",
    "ff.net.2": "img_mlp.2",
    "ff_context.net.0.proj": "txt_mlp.0",
    "ff_context.net.2": "txt_mlp.2",
    "attn.norm_q": "img_attn.norm.query_norm",
    "attn.norm_k": "img_attn.norm.key_norm",
    "attn.norm_added_q": "txt_attn.norm.query_norm",
    "attn.norm_added_k": "txt_attn.norm.key_norm",
}
_DOUBLE_FUSED = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
_SINGLE = {
    "norm.linear": "modulation.lin",
    "proj_out": "linear2",
    "attn.norm_q": "norm.query_norm",
    "attn.norm_k": "norm.key_norm",
}
_SINGLE_FUSED = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}

# scope: (diffusers prefix regex, BFL prefix regex, module renames, fused groups)
_SCOPES: tuple[tuple[str, str, Mapping[str, str], Mapping[str, tuple[str, ...]]], ...] = (
    (r"transformer_blocks\.(\d+)\.", r"double_blocks\.(\d+)\.", _DOUBLE, _DOUBLE_FUSED),
    (r"single_transformer_blocks\.(\d+)\.", r"single_blocks\.(\d+)\.", _SINGLE, _SINGLE_FUSED),
)
_DIFFUSERS_BLOCK = ("transformer_blocks.{}.", "single_transformer_blocks.{}.")
_BFL_BLOCK = ("double_blocks.{}.", "single_blocks.{}.")


def _match_block(module: str, side: int) -> tuple[int, re.Match[str]] | None:
    """(scope index, match) when `module` lies in a double/single block; side 0 = diffusers, 1 = BFL."""
    for scope, patterns in enumerate(_SCOPES):
        pattern = patterns[0] if side == 0 else patterns[1]
        if m := re.match(pattern, module + "."):
            return scope, m
    return None


def _split_param(key: str) -> tuple[str, str]:
    module, _, param = key.rpartition(".")
    if not module:
        raise ValueError(f"unexpected key {key!r}")
    return module, param


def _is_norm(module: str) -> bool:
    return module.rsplit(".", 1)[-1].startswith(("norm_", "query_norm", "key_norm"))


def diffusers_flux_group(key: str) -> str:
    """Keys that must be converted together share this value (one transformer block, else the key)."""
    m = re.match(r"(single_transformer_blocks|transformer_blocks)\.(\d+)\.", key)
    return m.group(0) if m else key


def bfl_flux_group(key: str) -> str:
    """BFL-side counterpart of `diffusers_flux_group`."""
    m = re.match(r"(single_blocks|double_blocks)\.(\d+)\.", key)
    return m.group(0) if m else key


def _swap_halves(t: Tensor) -> Tensor:
    first, second = t.chunk(2, dim=0)
    return torch.cat((second, first), dim=0)


def diffusers_to_bfl_transformer(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """diffusers-layout FLUX transformer state dict (complete, or whole blocks) -> BFL layout.

    Raises ValueError for unknown keys or a fused group with parts missing.
    """
    out: dict[str, Tensor] = {}
    pending: dict[tuple[str, str], dict[int, Tensor]] = {}
    expected: dict[tuple[str, str], tuple[str, ...]] = {}
    for key, tensor in sd.items():
        module, param = _split_param(key)
        found = _match_block(module, 0)
        if found is None:
            if module not in DIFFUSERS_TOP_MODULES:
                raise ValueError(f"unknown diffusers FLUX transformer key {key!r}")
            out[f"{DIFFUSERS_TOP_MODULES[module]}.{param}"] = (
                _swap_halves(tensor) if module == _SWAPPED else tensor
            )
            continue
        scope, m = found
        prefix, local = _BFL_BLOCK[scope].format(m.group(1)), module[m.end() :]
        renames, fused = _SCOPES[scope][2], _SCOPES[scope][3]
        if local in renames:
            target = renames[local]
            out[f"{prefix}{target}.{'scale' if _is_norm(target) else param}"] = tensor
            continue
        for target, parts in fused.items():
            if local in parts:
                slot = (f"{prefix}{target}.{param}", key[: len(key) - len(local) - len(param) - 1])
                pending.setdefault(slot, {})[parts.index(local)] = tensor
                expected[slot] = parts
                break
        else:
            raise ValueError(f"unknown diffusers FLUX transformer key {key!r}")
    for (target, source_prefix), pieces in pending.items():
        wanted = expected[(target, source_prefix)]
        missing = [f"{source_prefix}{p}" for i, p in enumerate(wanted) if i not in pieces]
        if missing:
            raise ValueError(f"cannot build {target}: missing {missing} (convert whole blocks)")
        out[target] = torch.cat([pieces[i] for i in range(len(wanted))], dim=0)
    return out


def _hidden_of(sd: Mapping[str, Tensor], prefix: str) -> int:
    for key, axis in (("linear1.weight", 1), ("linear2.weight", 0), ("modulation.lin.weight", 1)):
        if prefix + key in sd:
            return int(sd[prefix + key].shape[axis])
    raise ValueError(
        f"cannot split {prefix}linear1.bias without {prefix}linear1.weight, linear2.weight or "
        f"modulation.lin.weight in the same dict (convert whole blocks)"
    )


def bfl_to_diffusers_transformer(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """BFL-layout FLUX transformer state dict (complete, or whole blocks) -> diffusers layout."""
    top = {v: k for k, v in DIFFUSERS_TOP_MODULES.items()}
    out: dict[str, Tensor] = {}
    for key, tensor in sd.items():
        module, param = _split_param(key)
        found = _match_block(module, 1)
        if found is None:
            if module not in top:
                raise ValueError(f"unknown BFL FLUX transformer key {key!r}")
            out[f"{top[module]}.{param}"] = _swap_halves(tensor) if top[module] == _SWAPPED else tensor
            continue
        scope, m = found
        prefix, local = _DIFFUSERS_BLOCK[scope].format(m.group(1)), module[m.end() :]
        block_prefix = key[: m.end()]
        renames, fused = _SCOPES[scope][2], _SCOPES[scope][3]
        inverse = {v: k for k, v in renames.items()}
        if local in inverse:
            target = inverse[local]
            out[f"{prefix}{target}.{'weight' if _is_norm(local) else param}"] = tensor
        elif local in fused:
            parts = fused[local]
            if len(parts) == 3:
                sizes = [tensor.shape[0] // 3] * 3
            else:
                hidden = _hidden_of(sd, block_prefix)
                sizes = [hidden] * 3 + [tensor.shape[0] - 3 * hidden]
            for part, piece in zip(parts, tensor.split(sizes, dim=0)):
                # clones: views sharing one storage cannot be saved with safetensors
                out[f"{prefix}{part}.{param}"] = piece.clone()
        else:
            raise ValueError(f"unknown BFL FLUX transformer key {key!r}")
    return out
