"""Model handles: the MODEL / CLIP / VAE values that travel between nodes.

A handle is a frozen dataclass: a *shared* base module (loaded once, never mutated by a node), the
hyper-parameters it was built from, an ordered tuple of weight patches and a few options. A node
that changes a model returns `handle.clone(...)` or `handle.with_patches(...)`; the base module and
every other handle that shares it are untouched, which keeps the executor's output cache correct.

Patch contract (LoRA and friends build on this; applying is the memory manager's job, with the
math in `models.lora.math`):
- A `WeightPatch` names one tensor of the base module by its state-dict key (the BFL key for the
  diffusion model, e.g. "double_blocks.0.img_attn.qkv.weight"; the HF key inside a text encoder,
  prefixed "clip_l." / "t5xxl."). Bias deltas are patches on the ".bias" key.
- `kind` says how `tensors` combine with the base weight W; `slots` names each tensor (see
  `KIND_SLOTS`). With s = strength and scale = alpha / rank (1 when alpha is None):
  "diff": W + s * diff;  "set": W + s * (weight - W) (s = 1: replaced);
  "lora": W + s * scale * (up @ down) (LoCon `mid`: Tucker core for conv kernels);
  "loha": W + s * scale * (w1a @ w1b) * (w2a @ w2b);  "lokr": W + s * scale * kron(w1, w2).
  "oft": W + s * (rescale * R^T W - W), R the block-diagonal Cayley rotation of `blocks`
  (alpha bounds its skew part; see `models.lora.oft`).
  A `dora_scale` slot makes lora/loha/lokr DoRA patches (columns re-normalised, ComfyUI's rule).
- `base_strength` multiplies W before the patch (model merges: W * ratio + other * (1 - ratio)).
  `inner` patches are applied to a diff/set tensor first (merging a model that carries patches).
- `reshape` zero-pads the base tensor to a new shape first (BFL control LoRAs widen img_in).
  Where a patch targets part of a fused tensor (diffusers q/k/v into BFL qkv), `offset`
  = (dim, start, length) selects the slice it applies to.
- Patches apply in tuple order onto a copy of the base weight, in float32, and the result is
  cast back to the stored dtype; undoing restores the backup. Nothing is ever set on the module
  from outside while a handle that does not carry the patch may use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import torch
from torch import nn

# kind -> (required slots, optional slots); `tensors` follow `slots` in order.
KIND_SLOTS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = MappingProxyType(
    {
        "diff": (("diff",), ()),
        "set": (("weight",), ()),
        "lora": (("up", "down"), ("mid", "dora_scale")),
        "loha": (("w1a", "w1b", "w2a", "w2b"), ("t1", "t2", "dora_scale")),
        "lokr": ((), ("w1", "w1a", "w1b", "w2", "w2a", "w2b", "t2", "dora_scale")),
        "oft": (("blocks",), ("rescale",)),
    }
)
PATCH_KINDS = frozenset(KIND_SLOTS)


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True, eq=False)
class WeightPatch:
    """One change to one base tensor; compared by identity (it holds tensors).

    `slots` names `tensors` one by one; left empty it defaults to the kind's required slots, so
    `WeightPatch(key, "diff", (d,))` and `WeightPatch(key, "lora", (up, down), alpha=a)` work.
    """

    key: str
    kind: str
    tensors: tuple[torch.Tensor, ...]
    strength: float = 1.0
    offset: tuple[int, int, int] | None = None  # (dim, start, length) inside a fused tensor
    source: str = ""  # e.g. the LoRA file name, for logs
    slots: tuple[str, ...] = ()
    alpha: float | None = None  # lora/loha/lokr: scale = alpha / rank; None: scale 1
    base_strength: float = 1.0  # W is multiplied by this before the patch (merges)
    reshape: tuple[int, ...] | None = None  # zero-pad the base tensor to this shape first
    inner: tuple[WeightPatch, ...] = ()  # diff/set: patches applied to the tensor first

    def __post_init__(self) -> None:
        if self.kind not in KIND_SLOTS:
            raise ValueError(f"patch {self.key!r}: kind {self.kind!r} is not one of {sorted(PATCH_KINDS)}")
        if not self.tensors:
            raise ValueError(f"patch {self.key!r}: no tensors")
        required, optional = KIND_SLOTS[self.kind]
        if not self.slots:
            object.__setattr__(self, "slots", required[: len(self.tensors)])
        if len(self.slots) != len(self.tensors) or len(set(self.slots)) != len(self.slots):
            raise ValueError(
                f"patch {self.key!r}: slots {self.slots} do not name the {len(self.tensors)} tensors"
            )
        unknown = set(self.slots) - set(required) - set(optional)
        missing = set(required) - set(self.slots)
        if unknown or missing:
            raise ValueError(
                f"patch {self.key!r} ({self.kind}): unknown slots {sorted(unknown)}, missing {sorted(missing)}"
            )
        if self.kind == "lokr":
            for factor in ("w1", "w2"):
                if factor not in self.slots and not {f"{factor}a", f"{factor}b"} <= set(self.slots):
                    raise ValueError(f"patch {self.key!r} (lokr): needs {factor} or {factor}a and {factor}b")
        if self.inner and self.kind not in ("diff", "set"):
            raise ValueError(f"patch {self.key!r}: inner patches only apply to diff/set tensors")
        if self.offset is not None and len(self.offset) != 3:
            raise ValueError(f"patch {self.key!r}: offset must be (dim, start, length), got {self.offset}")

    def tensor(self, slot: str) -> torch.Tensor | None:
        """The tensor in `slot`, or None when this patch has none there."""
        return self.tensors[self.slots.index(slot)] if slot in self.slots else None

    def named(self) -> dict[str, torch.Tensor]:
        """slot -> tensor."""
        return dict(zip(self.slots, self.tensors))

    @property
    def dora_scale(self) -> torch.Tensor | None:
        return self.tensor("dora_scale")

    def with_strength(self, strength: float) -> WeightPatch:
        """The same patch at another strength (tensors shared)."""
        return dataclasses.replace(self, strength=strength)


@dataclass(frozen=True)
class ModelOptions:
    """Per-handle settings of a diffusion model that are not weights.

    `sampling` holds the model-sampling object set by ModelSampling* nodes (None: the default for
    the variant); `extras` is an immutable mapping for settings without a dedicated field.
    """

    source: Path | None = None
    weight_dtype: str = "default"
    compute_dtype: torch.dtype = torch.bfloat16
    sampling: Any = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extras", _frozen_mapping(self.extras))


H = TypeVar("H", bound="_Handle")


class _Handle:
    """Shared behaviour: cheap clones and patch accumulation. Handles compare by identity."""

    patches: tuple[WeightPatch, ...]

    def clone(self: H, **changes: Any) -> H:
        """A new handle sharing the base module, with `changes` applied (dataclasses.replace)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def with_patches(self: H, *patches: WeightPatch) -> H:
        """A clone whose patches are this handle's followed by `patches`."""
        return self.clone(patches=self.patches + tuple(patches))


@dataclass(frozen=True, eq=False)
class ModelHandle(_Handle):
    """MODEL: a FLUX diffusion model (`models.flux.model.Flux`) + its `FluxParams`."""

    module: nn.Module
    params: Any
    patches: tuple[WeightPatch, ...] = ()
    options: ModelOptions = field(default_factory=ModelOptions)

    def with_options(self, **changes: Any) -> ModelHandle:
        return self.clone(options=dataclasses.replace(self.options, **changes))


@dataclass(frozen=True, eq=False)
class ClipHandle(_Handle):
    """CLIP: FLUX text encoders (`models.text.encode.TextEncoders`) and how prompts are tokenized."""

    encoders: Any
    t5_max_length: int | None = None  # None: pad to 256, never truncate (ComfyUI); 256/512: BFL-style cap
    sources: tuple[Path, ...] = ()
    patches: tuple[WeightPatch, ...] = ()
    compute_dtype: torch.dtype = torch.bfloat16
    device: str = "default"  # "cpu": the loader asked to keep the encoders on the CPU
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.t5_max_length is not None and self.t5_max_length < 1:
            raise ValueError(f"t5_max_length must be >= 1 or None, got {self.t5_max_length}")
        if self.device not in ("default", "cpu"):
            raise ValueError(f"device must be 'default' or 'cpu', got {self.device!r}")
        object.__setattr__(self, "extras", _frozen_mapping(self.extras))


@dataclass(frozen=True, eq=False)
class VaeHandle(_Handle):
    """VAE: the FLUX autoencoder (`models.flux.autoencoder.AutoEncoder`) + its params."""

    module: nn.Module
    params: Any
    source: Path | None = None
    patches: tuple[WeightPatch, ...] = ()
    compute_dtype: torch.dtype = torch.float32
