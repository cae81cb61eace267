"""diffusers AutoencoderKL <-> BFL ae.safetensors state dicts (pure dict -> dict, exact inverses).

Renames only, except the mid-block attention projections: diffusers Linear [C, C] <-> BFL 1x1 conv
[C, C, 1, 1]. diffusers numbers decoder up blocks in execution order, BFL by resolution level, so
`up_blocks.{n-1-b}` <-> `up.{b}`; n (levels, 4 for FLUX) is read from the keys unless given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

_ATTN = {"q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0", "norm": "group_norm"}
_LEGACY_ATTN = {"query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}  # old diffusers names
_RESNET = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "nin_shortcut": "conv_shortcut",
}
_SIDE = r"(encoder|decoder)"


def _rename(table: Mapping[str, str], name: str, key: str) -> str:
    if name not in table:
        raise ValueError(f"unknown autoencoder layer {name!r} in key {key!r}")
    return table[name]


def _levels(sd: Mapping[str, Tensor], pattern: str, given: int | None) -> int:
    if given is not None:
        return given
    found = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 4


def _to_linear(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], t.shape[1]) if t.ndim == 4 else t


def _to_conv(t: Tensor) -> Tensor:
    return t.reshape(*t.shape, 1, 1) if t.ndim == 2 else t


def bfl_to_diffusers_vae(sd: Mapping[str, Tensor], num_levels: int | None = None) -> dict[str, Tensor]:
    """ae.safetensors-layout state dict -> diffusers AutoencoderKL layout. Raises ValueError on unknown keys."""
    n = _levels(sd, r"(?:decoder\.up|encoder\.down)\.(\d+)\.", num_levels)
    out: dict[str, Tensor] = {}
    for key, t in sd.items():
        if m := re.fullmatch(rf"{_SIDE}\.(conv_in|conv_out|norm_out)\.(weight|bias)", key):
            name = "conv_norm_out" if m.group(2) == "norm_out" else m.group(2)
            out[f"{m.group(1)}.{name}.{m.group(3)}"] = t
        elif m := re.fullmatch(r"encoder\.down\.(\d+)\.block\.(\d+)\.(\w+)\.(weight|bias)", key):
            out[
                f"encoder.down_blocks.{m.group(1)}.resnets.{m.group(2)}.{_rename(_RESNET, m.group(3), key)}.{m.group(4)}"
            ] = t
        elif m := re.fullmatch(r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)", key):
            out[f"encoder.down_blocks.{m.group(1)}.downsamplers.0.conv.{m.group(2)}"] = t
        elif m := re.fullmatch(r"decoder\.up\.(\d+)\.block\.(\d+)\.(\w+)\.(weight|bias)", key):
            level = n - 1 - int(m.group(1))
            out[
                f"decoder.up_blocks.{level}.resnets.{m.group(2)}.{_rename(_RESNET, m.group(3), key)}.{m.group(4)}"
            ] = t
        elif m := re.fullmatch(r"decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)", key):
            out[f"decoder.up_blocks.{n - 1 - int(m.group(1))}.upsamplers.0.conv.{m.group(2)}"] = t
        elif m := re.fullmatch(rf"{_SIDE}\.mid\.block_([12])\.(\w+)\.(weight|bias)", key):
            index = int(m.group(2)) - 1
            out[
                f"{m.group(1)}.mid_block.resnets.{index}.{_rename(_RESNET, m.group(3), key)}.{m.group(4)}"
            ] = t
        elif m := re.fullmatch(rf"{_SIDE}\.mid\.attn_1\.(\w+)\.(weight|bias)", key):
            name = _rename(_ATTN, m.group(2), key)
            out[f"{m.group(1)}.mid_block.attentions.0.{name}.{m.group(3)}"] = (
                t if m.group(2) == "norm" else _to_linear(t)
            )
        else:
            raise ValueError(f"unknown FLUX autoencoder key {key!r}")
    return out


def diffusers_to_bfl_vae(sd: Mapping[str, Tensor], num_levels: int | None = None) -> dict[str, Tensor]:
    """diffusers AutoencoderKL state dict (no quant convs) -> ae.safetensors layout."""
    n = _levels(sd, r"(?:decoder\.up_blocks|encoder\.down_blocks)\.(\d+)\.", num_levels)
    resnet = {v: k for k, v in _RESNET.items()}
    attn = {v: k for k, v in _ATTN.items()} | _LEGACY_ATTN
    out: dict[str, Tensor] = {}
    for key, t in sd.items():
        if m := re.fullmatch(rf"{_SIDE}\.(conv_in|conv_out|conv_norm_out)\.(weight|bias)", key):
            name = "norm_out" if m.group(2) == "conv_norm_out" else m.group(2)
            out[f"{m.group(1)}.{name}.{m.group(3)}"] = t
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(weight|bias)", key):
            out[
                f"encoder.down.{m.group(1)}.block.{m.group(2)}.{_rename(resnet, m.group(3), key)}.{m.group(4)}"
            ] = t
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", key):
            out[f"encoder.down.{m.group(1)}.downsample.conv.{m.group(2)}"] = t
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(weight|bias)", key):
            level = n - 1 - int(m.group(1))
            out[f"decoder.up.{level}.block.{m.group(2)}.{_rename(resnet, m.group(3), key)}.{m.group(4)}"] = t
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", key):
            out[f"decoder.up.{n - 1 - int(m.group(1))}.upsample.conv.{m.group(2)}"] = t
        elif m := re.fullmatch(rf"{_SIDE}\.mid_block\.resnets\.([01])\.(\w+)\.(weight|bias)", key):
            out[
                f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{_rename(resnet, m.group(3), key)}.{m.group(4)}"
            ] = t
        elif m := re.fullmatch(rf"{_SIDE}\.mid_block\.attentions\.0\.([\w.]+?)\.(weight|bias)", key):
            name = _rename(attn, m.group(2), key)
            out[f"{m.group(1)}.mid.attn_1.{name}.{m.group(3)}"] = t if name == "norm" else _to_conv(t)
        else:
            hint = " (quant convs: not a FLUX.1 VAE)" if "quant_conv" in key else ""
            raise ValueError(f"unknown diffusers AutoencoderKL key {key!r}{hint}")
    return out
