"""kohya / sd-scripts LoRA (and LyCORIS LoHa/LoKr saved under kohya names) -> patches.

Keys: `lora_unet_<BFL path with "_">.<part>`; text encoders `lora_te1_` / `lora_te_` (CLIP-L) and
`lora_te3_` / `lora_te2_` (T5; OneTrainer says te2 on FLUX). Underscore names are resolved by
lookup against the real keys (reference §7.2); `lora_unet_` names in diffusers spelling
(`lora_unet_transformer_blocks_0_attn_to_q`) go through the diffusers table. `split_qkv` files need
nothing special: their block-sparse up matrix is an ordinary LoRA with alpha / down.shape[0]
(ComfyUI's reading, reference §7.4).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from ..adapters import Converted, ModuleParts, convert_groups, group_by_module
from ..targets import LoraTargets, Target, diffusers_target, diffusers_underscore

UNET = "lora_unet_"
TEXT = {"lora_te1_": ("clip",), "lora_te_": ("clip",), "lora_te2_": ("t5", "clip"), "lora_te3_": ("t5",)}
PREFIXES = (UNET, *TEXT)


def rows_of(group: ModuleParts) -> int | None:
    up = group.parts.get("up")
    return int(up.shape[0]) if up is not None else None


def resolve_diffusers_underscore(name: str, group: ModuleParts, targets: LoraTargets) -> Target | None:
    """A diffusers module spelt with "_" (OneTrainer, SimpleTuner, some kohya files) -> its BFL target."""
    module = diffusers_underscore(targets).get(name)
    return None if module is None else diffusers_target(module, targets, rows=rows_of(group))


def resolve_text(name: str, encoders: tuple[str, ...], targets: LoraTargets) -> Target | None:
    for encoder in encoders:
        module = targets.underscore.get(f"{encoder}:{name}")
        if module is not None:
            return targets.target(module)
    return None


def resolve(name: str, group: ModuleParts, targets: LoraTargets) -> Target | None:
    if name.startswith(UNET):
        rest = name[len(UNET) :]
        module = targets.underscore.get(rest)
        if module is not None and not module.startswith(("clip_l.", "t5xxl.")):
            return targets.target(module)
        return resolve_diffusers_underscore(rest, group, targets)
    for prefix, encoders in TEXT.items():
        if name.startswith(prefix):
            return resolve_text(name[len(prefix) :], encoders, targets)
    return None


def convert_kohya(sd: Mapping[str, Tensor], targets: LoraTargets, *, source: str = "") -> Converted:
    groups, stray = group_by_module(sd)
    done = convert_groups(groups, lambda name, g: resolve(name, g, targets), source=source)
    return done + Converted(unmapped=tuple(stray))
