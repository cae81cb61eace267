"""ComfyUI's generic LoRA form -> patches: BFL paths under `diffusion_model.` (or bare).

Covers ComfyUI's own training output (TrainLoraNode -> SaveLoRA, reference §7.6): lora_up/down +
alpha, `.diff` (1-D weights), `.diff_b` (biases), `.set_weight`, `.reshape_weight`, `.dora_scale`,
LoHa/LoKr/OFT parts; and the other up/down spellings ComfyUI accepts (`lora_A`/`lora_B`, `.lora.up`,
`_lora.up`, `.lora_linear_layer.up`). Text encoders: `text_encoders.clip_l.transformer.<HF path>`
and `text_encoders.t5xxl.transformer.<HF path>`.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from ..adapters import Converted, ModuleParts, convert_groups, group_by_module
from ..targets import LoraTargets, Target

MODEL = "diffusion_model."
CLIP = "text_encoders.clip_l.transformer."
T5 = "text_encoders.t5xxl.transformer."


def resolve(name: str, group: ModuleParts, targets: LoraTargets) -> Target | None:
    if name.startswith(CLIP):
        module = targets.clip_module(name[len(CLIP) :])
        return None if module is None else targets.target(module)
    if name.startswith(T5):
        module = targets.t5_module(name[len(T5) :])
        return None if module is None else targets.target(module)
    module = name.removeprefix(MODEL)
    if module.startswith(("clip_l.", "t5xxl.")):
        return None
    return targets.target(module)


def convert_comfyui(sd: Mapping[str, Tensor], targets: LoraTargets, *, source: str = "") -> Converted:
    groups, stray = group_by_module(sd)
    done = convert_groups(groups, lambda name, g: resolve(name, g, targets), source=source)
    return done + Converted(unmapped=tuple(stray))
