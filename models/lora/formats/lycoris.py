"""SimpleTuner LyCORIS (LoHa, LoKr, LoCon) -> patches: `lycoris_<diffusers path with "_">.<part>`.

Parts are LyCORIS's (`hada_w1_a` ..., `lokr_w1` / `lokr_w2_a` ..., `lora_up` / `lora_down`, `alpha`,
`dora_scale`); the math is in `models.lora.math` (reference §7.5). LyCORIS files under kohya names
(`lora_unet_...hada_w1_a`) go through the kohya converter, which reads the same parts.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from ..adapters import Converted, ModuleParts, convert_groups, group_by_module
from ..targets import LoraTargets, Target
from .kohya import resolve_diffusers_underscore

PREFIX = "lycoris_"


def resolve(name: str, group: ModuleParts, targets: LoraTargets) -> Target | None:
    if not name.startswith(PREFIX):
        return None
    return resolve_diffusers_underscore(name[len(PREFIX) :], group, targets)


def convert_lycoris(sd: Mapping[str, Tensor], targets: LoraTargets, *, source: str = "") -> Converted:
    groups, stray = group_by_module(sd)
    done = convert_groups(groups, lambda name, g: resolve(name, g, targets), source=source)
    return done + Converted(unmapped=tuple(stray))
