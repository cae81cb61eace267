"""BFL's FLUX.1 Canny/Depth control LoRA -> patches (reference §7.7).

Bare BFL keys: every Linear X has X.lora_A.weight [r, in], X.lora_B.weight [out, r] and
X.lora_B.bias [out] (a bias delta); scale 1. Every `*_norm.scale` is a full replacement value (a
"set" patch). img_in's LoRA takes 128 input features: the patch zero-pads img_in.weight to
[hidden, 128] first, so the patched model reads 32 latent channels like Canny/Depth-dev.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from models.patches import WeightPatch

from ..adapters import Converted, ModuleParts, convert_groups, group_by_module
from ..targets import LoraTargets, Target


def is_bfl_control(keys: frozenset[str] | set[str]) -> bool:
    return "img_in.lora_A.weight" in keys and any(k.endswith("norm.key_norm.scale") for k in keys)


def _resolve(name: str, group: ModuleParts, targets: LoraTargets) -> Target | None:
    return targets.target(name) if targets.has(name) else None


def _widen(patch: WeightPatch, targets: LoraTargets) -> WeightPatch:
    shape = targets.shapes.get(patch.key)
    down = patch.tensor("down")
    if patch.kind != "lora" or shape is None or down is None or len(shape) != 2 or down.shape[1] <= shape[1]:
        return patch
    return WeightPatch(
        patch.key,
        "lora",
        patch.tensors,
        slots=patch.slots,
        alpha=patch.alpha,
        source=patch.source,
        reshape=(shape[0], int(down.shape[1])),
    )


def convert_bfl_control(sd: Mapping[str, Tensor], targets: LoraTargets, *, source: str = "") -> Converted:
    scales = {k: v for k, v in sd.items() if k.endswith("_norm.scale")}
    groups, stray = group_by_module({k: v for k, v in sd.items() if k not in scales})
    done = convert_groups(groups, lambda name, g: _resolve(name, g, targets), source=source)
    patches = [_widen(p, targets) for p in done.patches]
    unmapped = list(done.unmapped) + stray
    for key, value in scales.items():
        if key in targets.shapes:
            patches.append(WeightPatch(key, "set", (value,), source=source))
        else:
            unmapped.append(key)
    return Converted(tuple(patches), tuple(unmapped))
