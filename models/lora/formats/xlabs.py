"""XLabs (x-flux) LoRA -> patches (reference §7.3).

double_blocks.{i}.processor.{qkv_lora1, proj_lora1, qkv_lora2, proj_lora2}.{down,up}.weight and
single_blocks.{i}.processor.{qkv_lora, proj_lora}.{down,up}.weight, optionally under
`diffusion_model.`. `*1` is the image stream, `*2` the text stream; a single block's qkv LoRA covers
the first 3 x hidden rows of linear1. No alpha: factor 1, strength applied once (as ComfyUI).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from ..adapters import Converted, ModuleParts, convert_groups, group_by_module
from ..targets import LoraTargets, Target

_DOUBLE = {
    "qkv_lora1": "img_attn.qkv",
    "proj_lora1": "img_attn.proj",
    "qkv_lora2": "txt_attn.qkv",
    "proj_lora2": "txt_attn.proj",
}
_SINGLE = {"qkv_lora": "linear1", "proj_lora": "linear2"}
_NAME = re.compile(r"^(?:diffusion_model\.)?(double_blocks|single_blocks)\.(\d+)\.processor\.(\w+)$")


def resolve(name: str, group: ModuleParts, targets: LoraTargets) -> Target | None:
    m = _NAME.match(name)
    if m is None:
        return None
    kind, index, proc = m.groups()
    table = _DOUBLE if kind == "double_blocks" else _SINGLE
    if proc not in table:
        return None
    module = f"{kind}.{index}.{table[proc]}"
    shape = targets.weight_shape(module)
    if shape is None:
        return None
    if module.endswith("linear1"):
        return Target(module, offset=(0, 0, 3 * shape[1]))
    return Target(module)


def convert_xlabs(sd: Mapping[str, Tensor], targets: LoraTargets, *, source: str = "") -> Converted:
    groups, stray = group_by_module(sd, plain=True)
    done = convert_groups(groups, lambda name, g: resolve(name, g, targets), source=source)
    return done + Converted(unmapped=tuple(stray))
