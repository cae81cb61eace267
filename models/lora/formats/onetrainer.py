"""OneTrainer FLUX LoRA -> patches: `lora_transformer_<diffusers path with "_">` + kohya parts.

Text-encoder parts use kohya's prefixes (`lora_te1_` CLIP-L, `lora_te2_` T5) and are resolved the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from ..adapters import Converted, ModuleParts, convert_groups, group_by_module
from ..targets import LoraTargets, Target
from .kohya import TEXT, resolve_diffusers_underscore, resolve_text

PREFIX = "lora_transformer_"


def resolve(name: str, group: ModuleParts, targets: LoraTargets) -> Target | None:
    if name.startswith(PREFIX):
        return resolve_diffusers_underscore(name[len(PREFIX) :], group, targets)
    for prefix, encoders in TEXT.items():
        if name.startswith(prefix):
            return resolve_text(name[len(prefix) :], encoders, targets)
    return None


def convert_onetrainer(sd: Mapping[str, Tensor], targets: LoraTargets, *, source: str = "") -> Converted:
    groups, stray = group_by_module(sd)
    done = convert_groups(groups, lambda name, g: resolve(name, g, targets), source=source)
    return done + Converted(unmapped=tuple(stray))
