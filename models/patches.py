"""Model handles: the MODEL / CLIP / VAE values that travel between nodes.

A handle is a frozen dataclass: a *shared* base module (loaded once, never mutated by a node), the
hyper-parameters it was built from, an ordered tuple of weight patches and a few options. A node
that changes a model returns `handle.clone(...)` or `handle.with_patches(...)`; the base module and
every other handle that shares it are untouched, which keeps the executor's output cache correct.

Patch contract (LoRA and friends build on this; applying is the memory manager's job):
- A `WeightPatch` names one tensor of the base module by its state-dict key (the BFL key for the
  diffusion model, e.g. "double_blocks.0.img_attn.qkv.weight"; the HF key inside a text encoder,
  prefixed "clip_l." / "t5xxl.").
- `kind` says how `tensors` combine with the base weight W (shapes in the docstring of each kind):
  "diff": W + strength * d;  "set": W := tensors[0];  "lora": W + strength * alpha/rank * (up @ down).
  Where a patch targets part of a fused tensor (diffusers q/k/v into BFL qkv), `offset`
  = (dim, start, length) selects the slice it applies to.
- Patches apply in tuple order onto a backup of the base weight, in float32, and the result is
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

PATCH_KINDS = frozenset({"diff", "set", "lora"})


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True, eq=False)
class WeightPatch:
    """One change to one base tensor; compared by identity (it holds tensors)."""

    key: str
    kind: str
    tensors: tuple[torch.Tensor, ...]
    strength: float = 1.0
    offset: tuple[int, int, int] | None = None  # (dim, start, length) inside a fused tensor
    source: str = ""  # e.g. the LoRA file name, for logs

    def __post_init__(self) -> None:
        if self.kind not in PATCH_KINDS:
            raise ValueError(f"patch {self.key!r}: kind {self.kind!r} is not one of {sorted(PATCH_KINDS)}")
        if not self.tensors:
            raise ValueError(f"patch {self.key!r}: no tensors")


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
