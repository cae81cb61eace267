"""What a LoRA can patch: the keys and shapes of the model and text encoders, and name lookups.

Patch keys (the internal form every converter produces):
- diffusion model: BFL state-dict keys, e.g. "double_blocks.0.img_attn.qkv.weight";
- text encoders: the encoder module's own state-dict key prefixed "clip_l." / "t5xxl.", e.g.
  "clip_l.encoder.layers.0.self_attn.q_proj.weight" (transformers 5) or
  "clip_l.text_model.encoder..." (transformers 4, whose CLIPTextModel nests `text_model`).

LoRA files name modules in other spellings (kohya joins the path with "_", diffusers uses its own
module names, CLIP files always say "text_model."); `LoraTargets` resolves them against the real keys,
so ambiguous underscore names are never parsed, only looked up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

import torch
from torch import nn

from models.formats.diffusers_flux import DIFFUSERS_TOP_MODULES

CLIP_PREFIX = "clip_l."
T5_PREFIX = "t5xxl."
TEXT_PREFIXES = (CLIP_PREFIX, T5_PREFIX)
_CLIP_FILE_NEST = "text_model."


def is_text_key(key: str) -> bool:
    """Whether a patch key names a text-encoder tensor (a CLIP patch) rather than a model tensor."""
    return key.startswith(TEXT_PREFIXES)


@dataclass(frozen=True)
class Target:
    """Where one LoRA module lands: a module path (key without ".weight"), an optional row slice."""

    module: str
    offset: tuple[int, int, int] | None = None  # (dim, start, length) in `module`.weight / .bias
    swap_halves: bool = False  # diffusers norm_out: (scale, shift) rows vs BFL (shift, scale)
    param: str = "weight"  # "scale" for BFL RMSNorm modules

    @property
    def weight_key(self) -> str:
        return f"{self.module}.{self.param}"


@dataclass(frozen=True, eq=False)
class LoraTargets:
    """Patchable tensors: patch key -> shape (model keys bare, text-encoder keys prefixed)."""

    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", MappingProxyType({k: tuple(v) for k, v in self.shapes.items()}))

    @classmethod
    def of(
        cls, model: nn.Module | None = None, clip: nn.Module | None = None, t5: nn.Module | None = None
    ) -> LoraTargets:
        """Targets read from live modules (shapes only; no tensor is copied)."""
        shapes: dict[str, tuple[int, ...]] = {}
        for prefix, module in (("", model), (CLIP_PREFIX, clip), (T5_PREFIX, t5)):
            if module is not None:
                shapes.update(
                    {prefix + k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items()}
                )
        return cls(shapes)

    @classmethod
    def from_states(cls, *states: tuple[str, Mapping[str, torch.Tensor]]) -> LoraTargets:
        """Targets from (prefix, state dict) pairs, e.g. ("", flux_sd), ("clip_l.", clip_sd)."""
        return cls({prefix + k: tuple(v.shape) for prefix, sd in states for k, v in sd.items()})

    def has(self, module: str) -> bool:
        return f"{module}.weight" in self.shapes

    def weight_shape(self, module: str) -> tuple[int, ...] | None:
        return self.shapes.get(f"{module}.weight")

    @cached_property
    def modules(self) -> frozenset[str]:
        """Module paths that own a weight or bias."""
        return frozenset(
            k.rpartition(".")[0] for k in self.shapes if k.endswith((".weight", ".bias", ".scale"))
        )

    @cached_property
    def underscore(self) -> Mapping[str, str]:
        """kohya-style names ("double_blocks_0_img_attn_qkv", "te1:text_model_encoder_...") -> module."""
        out: dict[str, str] = {}
        for module in self.modules:
            if module.startswith(CLIP_PREFIX):
                inner = module[len(CLIP_PREFIX) :]
                nested = inner if inner.startswith(_CLIP_FILE_NEST) else _CLIP_FILE_NEST + inner
                out["clip:" + nested.replace(".", "_")] = module
            elif module.startswith(T5_PREFIX):
                out["t5:" + module[len(T5_PREFIX) :].replace(".", "_")] = module
            else:
                out[module.replace(".", "_")] = module
        return MappingProxyType(out)

    def target(self, module: str) -> Target | None:
        """A whole-tensor target for a module path in our key space, if it exists."""
        if f"{module}.weight" in self.shapes:
            return Target(module)
        if f"{module}.scale" in self.shapes:
            return Target(module, param="scale")
        return Target(module) if f"{module}.bias" in self.shapes else None

    @cached_property
    def fingerprint(self) -> int:
        """Hash of the key/shape set (part of LoRA cache keys: a file converts per model layout)."""
        return hash(frozenset(self.shapes.items()))

    def clip_module(self, hf_module: str) -> str | None:
        """The CLIP patch module for an HF module path as files spell it ("text_model.encoder...")."""
        bare = hf_module.removeprefix(_CLIP_FILE_NEST)
        for candidate in (CLIP_PREFIX + _CLIP_FILE_NEST + bare, CLIP_PREFIX + bare):
            if candidate in self.modules:
                return candidate
        return None

    def t5_module(self, hf_module: str) -> str | None:
        candidate = T5_PREFIX + hf_module
        return candidate if candidate in self.modules else None


# --- diffusers module names -> BFL modules (shared by diffusers/PEFT, OneTrainer, SimpleTuner) ----

_TOP = DIFFUSERS_TOP_MODULES
_DOUBLE = {
    "norm1.linear": ("img_mod.lin", None),
    "norm1_context.linear": ("txt_mod.lin", None),
    "attn.to_q": ("img_attn.qkv", 0),
    "attn.to_k": ("img_attn.qkv", 1),
    "attn.to_v": ("img_attn.qkv", 2),
    "attn.add_q_proj": ("txt_attn.qkv", 0),
    "attn.add_k_proj": ("txt_attn.qkv", 1),
    "attn.add_v_proj": ("txt_attn.qkv", 2),
    "attn.to_out.0": ("img_attn.proj", None),
    "attn.to_add_out": ("txt_attn.proj", None),
    "ff.net.0.proj": ("img_mlp.0", None),
    "ff.net.2": ("img_mlp.2", None),
    "ff_context.net.0.proj": ("txt_mlp.0", None),
    "ff_context.net.2": ("txt_mlp.2", None),
}
_SINGLE = {
    "norm.linear": ("modulation.lin", None),
    "attn.to_q": ("linear1", 0),
    "attn.to_k": ("linear1", 1),
    "attn.to_v": ("linear1", 2),
    "proj_mlp": ("linear1", 3),
    "proj_out": ("linear2", None),
}
_BLOCK = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$")


def diffusers_modules(double: int, single: int) -> list[str]:
    """Every Linear module name of a diffusers FLUX transformer with these block counts."""
    names = list(_TOP)
    names += [f"transformer_blocks.{i}.{local}" for i in range(double) for local in _DOUBLE]
    names += [f"single_transformer_blocks.{i}.{local}" for i in range(single) for local in _SINGLE]
    return names


def block_counts(targets: LoraTargets) -> tuple[int, int]:
    """(double, single) block counts of the model in `targets`."""
    counts = [0, 0]
    for module in targets.modules:
        if m := re.match(r"^(double|single)_blocks\.(\d+)\.", module):
            slot = 0 if m.group(1) == "double" else 1
            counts[slot] = max(counts[slot], int(m.group(2)) + 1)
    return counts[0], counts[1]


def diffusers_target(module: str, targets: LoraTargets, *, rows: int | None = None) -> Target | None:
    """The BFL target of a diffusers transformer module (no "transformer." prefix), or None.

    rows: output features of the LoRA piece; fused pieces (q/k/v, proj_mlp) get their row slice of
    the BFL weight (reference §7.3).
    """
    if module in _TOP:
        bfl = _TOP[module]
        return Target(bfl, swap_halves=module == "norm_out.linear") if targets.has(bfl) else None
    m = _BLOCK.match(module)
    if m is None:
        return None
    kind, index, local = m.groups()
    table, prefix = (_DOUBLE, "double_blocks") if kind == "transformer_blocks" else (_SINGLE, "single_blocks")
    if local not in table:
        return None
    bfl_local, piece = table[local]
    bfl = f"{prefix}.{index}.{bfl_local}"
    shape = targets.weight_shape(bfl)
    if shape is None:
        return None
    if piece is None:
        return Target(bfl)
    hidden = shape[1]  # fused weights take the hidden state as input: q/k/v pieces are hidden rows
    if piece < 3:
        return Target(bfl, offset=(0, piece * hidden, hidden))
    length = shape[0] - 3 * hidden if rows is None else rows
    return Target(bfl, offset=(0, 3 * hidden, length))


def diffusers_underscore(targets: LoraTargets) -> Mapping[str, str]:
    """diffusers module names with "." -> "_" (OneTrainer, SimpleTuner) -> diffusers module name."""
    double, single = block_counts(targets)
    return {name.replace(".", "_"): name for name in diffusers_modules(double, single)}
