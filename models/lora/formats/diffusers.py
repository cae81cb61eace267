"""diffusers / PEFT / ai-toolkit FLUX LoRA -> patches (reference §7.2, §7.3).

Keys: `transformer.<diffusers module>.lora_A.weight` / `.lora_B.weight` (also under
`base_model.model.`, or with no component prefix), text encoders `text_encoder.<HF CLIP path>` and
`text_encoder_2.<HF T5 path>`. Split q/k/v (and single-block proj_mlp) land on their row slices of
the fused BFL weight; `norm_out.linear` has its two output halves swapped. alpha: a `.alpha` tensor
when the file has one, else PEFT's `lora_alpha` (with `alpha_pattern`, `use_rslora`) from the
`lora_adapter_metadata` safetensors metadata, else none (factor 1, the scale is baked in).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..adapters import Converted, ModuleParts, convert_groups, group_by_module
from ..targets import LoraTargets, Target, diffusers_target

log = logging.getLogger(__name__)

METADATA_KEY = "lora_adapter_metadata"
COMPONENTS = ("transformer", "text_encoder", "text_encoder_2")
_WRAPPER = "base_model.model."


def split_component(name: str) -> tuple[str, str]:
    """(component, module) of a diffusers LoRA module name; bare names belong to the transformer."""
    name = name.removeprefix(_WRAPPER)
    for component in COMPONENTS:
        if name.startswith(component + "."):
            return component, name[len(component) + 1 :]
    return "transformer", name


def adapter_config(metadata: Mapping[str, str] | None, component: str) -> dict[str, Any]:
    """PEFT LoraConfig fields for `component` from diffusers' safetensors metadata ({} if none)."""
    raw = (metadata or {}).get(METADATA_KEY)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        log.warning("ignoring unreadable %s metadata", METADATA_KEY)
        return {}
    prefix = component + "."
    scoped = {k[len(prefix) :]: v for k, v in data.items() if k.startswith(prefix)}
    if scoped:
        return scoped
    has_components = any(k.startswith(tuple(c + "." for c in COMPONENTS)) for k in data)
    return {} if has_components else dict(data)


def _pattern_value(patterns: Mapping[str, Any], module: str) -> Any:
    for pattern, value in patterns.items():  # PEFT: the pattern matches a suffix of the module path
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return None


def alpha_for(module: str, config: Mapping[str, Any], rank: int | None) -> float | None:
    """alpha numerator such that alpha / rank is PEFT's scaling for `module`; None without config."""
    alpha = _pattern_value(config.get("alpha_pattern") or {}, module)
    if alpha is None:
        alpha = config.get("lora_alpha")
    if alpha is None:
        return None
    if config.get("use_rslora") and rank:
        return float(alpha) * rank / math.sqrt(rank)
    return float(alpha)


def _resolve(name: str, group: ModuleParts, targets: LoraTargets) -> Target | None:
    component, module = split_component(name)
    if component == "text_encoder":
        found = targets.clip_module(module)
        return None if found is None else targets.target(found)
    if component == "text_encoder_2":
        found = targets.t5_module(module)
        return None if found is None else targets.target(found)
    up = group.parts.get("up")
    return diffusers_target(module, targets, rows=None if up is None else int(up.shape[0]))


def convert_diffusers(
    sd: Mapping[str, Tensor],
    targets: LoraTargets,
    *,
    source: str = "",
    metadata: Mapping[str, str] | None = None,
) -> Converted:
    groups, stray = group_by_module(sd)
    configs = {c: adapter_config(metadata, c) for c in COMPONENTS}

    def alpha(name: str) -> float | None:
        component, module = split_component(name)
        down = groups[name].parts.get("down")
        return alpha_for(module, configs[component], None if down is None else int(down.shape[0]))

    done = convert_groups(groups, lambda name, g: _resolve(name, g, targets), source=source, alpha=alpha)
    return done + Converted(unmapped=tuple(stray))
