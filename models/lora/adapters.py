"""File keys -> adapter parts -> `WeightPatch`es: the steps every LoRA format shares.

A LoRA file stores, per target module, a few tensors whose key ends in a known suffix
(".lora_down.weight", ".hada_w1_a", ".diff_b", ...). `group_by_module` splits keys into
(module name as the file spells it, part); each format converter maps the module name to a
`Target`; `module_patches` turns one module's parts into patches on the target's weight and bias.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from models.patches import WeightPatch

from .targets import Target

# suffix -> part name; longest suffixes first so ".lora_B.bias" never reads as ".bias"
_SUFFIXES: tuple[tuple[str, str], ...] = tuple(
    sorted(
        {
            ".lora_up.weight": "up",
            ".lora_down.weight": "down",
            ".lora_mid.weight": "mid",
            ".lora_B.weight": "up",
            ".lora_A.weight": "down",
            ".lora_B.bias": "up_bias",
            ".lora.up.weight": "up",
            ".lora.down.weight": "down",
            "_lora.up.weight": "up",
            "_lora.down.weight": "down",
            ".lora_linear_layer.up.weight": "up",
            ".lora_linear_layer.down.weight": "down",
            ".alpha": "alpha",
            ".dora_scale": "dora_scale",
            ".lora_magnitude_vector": "dora_scale",
            ".lora_magnitude_vector.weight": "dora_scale",
            ".hada_w1_a": "w1a",
            ".hada_w1_b": "w1b",
            ".hada_w2_a": "w2a",
            ".hada_w2_b": "w2b",
            ".hada_t1": "t1",
            ".hada_t2": "t2",
            ".lokr_w1": "lokr_w1",
            ".lokr_w1_a": "lokr_w1a",
            ".lokr_w1_b": "lokr_w1b",
            ".lokr_w2": "lokr_w2",
            ".lokr_w2_a": "lokr_w2a",
            ".lokr_w2_b": "lokr_w2b",
            ".lokr_t2": "lokr_t2",
            ".oft_blocks": "oft_blocks",
            ".rescale": "oft_rescale",
            ".diff": "diff",
            ".diff_b": "diff_b",
            ".set_weight": "set_weight",
            ".reshape_weight": "reshape",
        }.items(),
        key=lambda kv: -len(kv[0]),
    )
)
# XLabs processors name their halves plainly
_PLAIN = ((".down.weight", "down"), (".up.weight", "up"))


@dataclass
class ModuleParts:
    """The tensors a file stores for one module, by part name, with the file keys they came from."""

    parts: dict[str, Tensor] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # part -> file key


def split_key(key: str, *, plain: bool = False) -> tuple[str, str] | None:
    """(module, part) of a LoRA file key, or None when the suffix is not an adapter part."""
    for suffix, part in (_PLAIN if plain else ()) + _SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], part
    return None


def group_by_module(
    sd: Mapping[str, Tensor], *, plain: bool = False
) -> tuple[dict[str, ModuleParts], list[str]]:
    """Keys grouped by module; also the keys that are not adapter parts."""
    groups: dict[str, ModuleParts] = {}
    stray: list[str] = []
    for key, tensor in sd.items():
        found = split_key(key, plain=plain)
        if found is None:
            stray.append(key)
            continue
        module, part = found
        group = groups.setdefault(module, ModuleParts())
        group.parts[part] = tensor
        group.keys[part] = key
    return groups, stray


def _swap(t: Tensor) -> Tensor:
    first, second = t.chunk(2, dim=0)
    return torch.cat((second, first), dim=0)


_LOHA = ("w1a", "w1b", "w2a", "w2b")
_LOKR = ("lokr_w1", "lokr_w1a", "lokr_w1b", "lokr_w2", "lokr_w2a", "lokr_w2b", "lokr_t2")


@dataclass(frozen=True)
class Built:
    """Patches made from one module and the file keys left unused (to report as unmapped)."""

    patches: tuple[WeightPatch, ...]
    unused: tuple[str, ...]


def _weight_patch(
    parts: dict[str, Tensor], target: Target, *, alpha: float | None, source: str
) -> tuple[WeightPatch | None, set[str]]:
    """The patch on target.weight and the parts it consumed."""
    key = target.weight_key
    reshape = tuple(int(n) for n in parts["reshape"].tolist()) if "reshape" in parts else None
    common = dict(offset=target.offset, source=source, reshape=reshape)
    dora = parts.get("dora_scale")
    if "alpha" in parts:
        alpha = float(parts["alpha"].float().item())
    used = {"alpha", "dora_scale", "reshape"} & set(parts)
    swap = target.swap_halves
    if dora is not None and swap and dora.shape[0] != 1:
        dora = _swap(dora)
    tensors: list[Tensor]
    if "up" in parts and "down" in parts:
        up = _swap(parts["up"]) if swap else parts["up"]
        slots, tensors = ["up", "down"], [up, parts["down"]]
        if "mid" in parts:
            slots.append("mid")
            tensors.append(parts["mid"])
        used |= {"up", "down", "mid"} & set(parts)
        kind = "lora"
    elif all(p in parts for p in _LOHA):
        tensors = [parts[p] for p in _LOHA]
        if swap:
            tensors[0], tensors[2] = _swap(tensors[0]), _swap(tensors[2])
        slots = list(_LOHA)
        if "t1" in parts and "t2" in parts:
            slots += ["t1", "t2"]
            tensors += [parts["t1"], parts["t2"]]
        used |= set(slots)
        kind = "loha"
    elif any(p in parts for p in _LOKR):
        present = [p for p in _LOKR if p in parts]
        slots, tensors = [p.removeprefix("lokr_") for p in present], [parts[p] for p in present]
        if swap:  # kron(w1, w2) swaps its row halves when w1's do (w1 with an even row count)
            first = "w1" if "w1" in slots else "w1a"
            if tensors[slots.index(first)].shape[0] % 2:
                return None, set()
            tensors[slots.index(first)] = _swap(tensors[slots.index(first)])
        used |= set(present)
        kind = "lokr"
    elif "oft_blocks" in parts and parts["oft_blocks"].dim() == 3:  # ComfyUI reads 3-D blocks only
        blocks = parts["oft_blocks"]
        rescale = parts.get("oft_rescale")
        if swap:  # the rotation acts on row blocks: swap whole blocks (an even block count)
            if blocks.shape[0] % 2:
                return None, set()
            blocks = _swap(blocks)
            rescale = None if rescale is None else _swap(rescale)
        slots, tensors = ["blocks"], [blocks]
        if rescale is not None:
            slots.append("rescale")
            tensors.append(rescale)
        used = (used - {"dora_scale"}) | ({"oft_blocks", "oft_rescale"} & set(parts))
        kind, dora = "oft", None  # a dora_scale beside OFT blocks stays unused (reported)
    elif "diff" in parts or "set_weight" in parts:
        kind, part = ("diff", "diff") if "diff" in parts else ("set", "set_weight")
        value = _swap(parts[part]) if swap else parts[part]
        slots, tensors = [kind if kind == "diff" else "weight"], [value]
        used.add(part)
        dora = None
    else:
        return None, set()
    if dora is not None:
        slots.append("dora_scale")
        tensors.append(dora)
    patch = WeightPatch(key, kind, tuple(tensors), slots=tuple(slots), alpha=alpha, **common)  # type: ignore[arg-type]
    return patch, used


def module_patches(
    group: ModuleParts, target: Target, *, source: str = "", alpha: float | None = None
) -> Built:
    """Patches on target.weight (lora/loha/lokr/diff/set) and target.bias (diff_b, lora_B.bias).

    alpha: the scale numerator when the file stores none for this module (diffusers metadata).
    """
    parts = group.parts
    patches: list[WeightPatch] = []
    weight, used = _weight_patch(parts, target, alpha=alpha, source=source)
    if weight is not None:
        patches.append(weight)
    for bias_part in ("diff_b", "up_bias"):
        if bias_part in parts:
            value = _swap(parts[bias_part]) if target.swap_halves else parts[bias_part]
            patches.append(
                WeightPatch(f"{target.module}.bias", "diff", (value,), offset=target.offset, source=source)
            )
            used.add(bias_part)
    if weight is None:
        used -= {"alpha", "dora_scale", "reshape"}
    unused = tuple(group.keys[p] for p in parts if p not in used)
    return Built(tuple(patches), unused)


@dataclass(frozen=True)
class Converted:
    """A converter's result: patches in our key space and the file keys that map to nothing."""

    patches: tuple[WeightPatch, ...] = ()
    unmapped: tuple[str, ...] = ()

    def __add__(self, other: Converted) -> Converted:
        return Converted(self.patches + other.patches, self.unmapped + other.unmapped)


def convert_groups(
    groups: Mapping[str, ModuleParts],
    resolve: Callable[[str, ModuleParts], Target | None],
    *,
    source: str = "",
    alpha: Callable[[str], float | None] = lambda module: None,
) -> Converted:
    """Patches for every module `resolve` maps; the keys of the others are unmapped."""
    patches: list[WeightPatch] = []
    unmapped: list[str] = []
    for name, group in groups.items():
        target = resolve(name, group)
        if target is None:
            unmapped += group.keys.values()
            continue
        built = module_patches(group, target, source=source, alpha=alpha(name))
        patches += built.patches
        unmapped += built.unused
    return Converted(tuple(patches), tuple(unmapped))
