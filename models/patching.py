"""What a handle asks of the memory manager, and the two ways its patches reach the forward pass.

`parts_of(item)` turns a handle (ModelHandle / ClipHandle / VaeHandle) or a bare module into
`Part`s: one module each, with the patches that name its tensors (text-encoder patches lose their
"clip_l." / "t5xxl." prefix). Patches then act in one of two ways:

- weight edit: when a tensor comes to the compute device, `edited_tensor` computes the patched
  value in float32 (`models.lora.math.patched_weight`) and casts it back to the stored dtype. The
  base tensor is never written: undoing puts the base tensor back, so its bytes are unchanged.
- bypass (forward-time adapter): `LinearAdapter`, a forward hook on the nn.Linear that owns the
  weight, adds `x @ delta.T (+ bias delta)` to the layer's output; the base weight is not touched
  at all. Used for fp8 / quantized weights (an edit would round the LoRA away) and for every
  Linear of a handle whose options ask for it (`BYPASS_OPTION`, ComfyUI's bypass mode).
  Tensors an adapter cannot express (non-Linear targets, patches that reshape) are edited; an
  fp8 tensor edited that way is stored in its layer's compute dtype, so nothing is rounded to fp8.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.formats.fp8 import is_fp8
from models.lora.math import patched_weight
from models.patches import ClipHandle, ModelHandle, VaeHandle, WeightPatch

BYPASS_OPTION = "bypass_patches"  # ModelOptions.extras / ClipHandle.extras key: True = bypass mode
TEXT_PREFIXES = {"clip_l.": "clip", "t5xxl.": "t5"}


class PatchTargetError(KeyError):
    """A patch names a tensor the model does not have."""


@dataclass(frozen=True, eq=False)
class Part:
    """One module to place, with its patches (keys relative to the module) and how to apply them."""

    module: nn.Module
    patches: tuple[WeightPatch, ...] = ()
    bypass: bool = False
    on_host: bool = False  # keep on the offload device (DualCLIPLoader device="cpu"); patches still apply
    label: str = ""


def _bypass_option(extras: Mapping[str, Any]) -> bool:
    return bool(extras.get(BYPASS_OPTION, False))


def parts_of(item: Any) -> list[Part]:
    """The parts a handle or module stands for (a CLIP handle: one per text encoder present)."""
    if isinstance(item, ModelHandle):
        return [Part(item.module, item.patches, _bypass_option(item.options.extras), label="diffusion model")]
    if isinstance(item, VaeHandle):
        return [Part(item.module, item.patches, label="VAE")]
    if isinstance(item, ClipHandle):
        parts = []
        for prefix, attr in TEXT_PREFIXES.items():
            module = getattr(item.encoders, attr, None)
            if module is None:
                continue
            mine = tuple(
                dataclasses.replace(p, key=p.key[len(prefix) :])
                for p in item.patches
                if p.key.startswith(prefix)
            )
            parts.append(
                Part(
                    module,
                    mine,
                    _bypass_option(item.extras),
                    on_host=item.device == "cpu",
                    label=attr.upper() if attr == "t5" else "CLIP-L",
                )
            )
        unrouted = [p.key for p in item.patches if not p.key.startswith(tuple(TEXT_PREFIXES))]
        if unrouted:
            raise PatchTargetError(f"text-encoder patches must start with clip_l. or t5xxl.: {unrouted[:5]}")
        return parts
    if isinstance(item, nn.Module):
        return [Part(item, label=type(item).__name__)]
    module = getattr(item, "module", None)  # other handle-like values carrying one module
    if isinstance(module, nn.Module):
        return [Part(module, tuple(getattr(item, "patches", ())), label=type(module).__name__)]
    raise TypeError(f"cannot place {type(item).__name__} on a device: not a model handle or nn.Module")


def with_bypass(handle: Any, enabled: bool = True) -> Any:
    """A clone of a MODEL or CLIP handle whose patches run as forward-time adapters (bypass mode)."""
    if isinstance(handle, ModelHandle):
        return handle.with_options(extras={**handle.options.extras, BYPASS_OPTION: enabled})
    if isinstance(handle, ClipHandle):
        return handle.clone(extras={**handle.extras, BYPASS_OPTION: enabled})
    raise TypeError(f"bypass mode applies to MODEL and CLIP handles, not {type(handle).__name__}")


def group_patches(patches: Sequence[WeightPatch]) -> dict[str, tuple[WeightPatch, ...]]:
    """key -> its patches in order."""
    grouped: dict[str, list[WeightPatch]] = {}
    for patch in patches:
        grouped.setdefault(patch.key, []).append(patch)
    return {key: tuple(group) for key, group in grouped.items()}


def owner_compute_dtype(owner: nn.Module, stored: torch.dtype) -> torch.dtype:
    """The dtype an edited tensor is stored in: its own, unless fp8 (then the layer's compute dtype)."""
    if not is_fp8(stored):
        return stored
    return getattr(owner, "compute_dtype", torch.bfloat16)


def edited_tensor(base: torch.Tensor, patches: Sequence[WeightPatch], dtype: torch.dtype) -> torch.Tensor:
    """`patches` applied to `base` in float32 on base's device, cast to `dtype`; base is not modified."""
    return patched_weight(base, patches).to(dtype)


def can_bypass(owner: nn.Module, attr: str, patches: Sequence[WeightPatch]) -> bool:
    """Whether an adapter on `owner` can add these patches at forward time."""
    return (
        isinstance(owner, nn.Linear)
        and attr in ("weight", "bias")
        and all(p.reshape is None for p in patches)
    )


class LinearAdapter:
    """Forward hook adding patch deltas to an nn.Linear's output: y + x @ dW.T + db (dW, db float32)."""

    def __init__(self, weight_delta: torch.Tensor | None, bias_delta: torch.Tensor | None) -> None:
        self.weight_delta = weight_delta
        self.bias_delta = bias_delta
        self._cast: dict[torch.dtype, tuple[torch.Tensor | None, torch.Tensor | None]] = {}

    @property
    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size() for t in (self.weight_delta, self.bias_delta) if t is not None
        )

    def _deltas(self, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if dtype not in self._cast:
            w = None if self.weight_delta is None else self.weight_delta.to(dtype)
            b = None if self.bias_delta is None else self.bias_delta.to(dtype)
            self._cast = {dtype: (w, b)}  # one dtype at a time: the cast copy is dropped on change
        return self._cast[dtype]

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        w, b = self._deltas(output.dtype)
        if w is not None:
            output = output + F.linear(x.to(output.dtype), w, b)
        elif b is not None:
            output = output + b
        return output


def adapter_for(
    owner: nn.Linear,
    weight_patches: Sequence[WeightPatch],
    bias_patches: Sequence[WeightPatch],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    device: torch.device,
) -> LinearAdapter:
    """The adapter for one Linear; `weight` / `bias` are its base tensors (any device, any float dtype)."""
    dw = db = None
    if weight_patches:
        base = weight.to(device=device, dtype=torch.float32)
        dw = patched_weight(base, weight_patches) - base
    if bias_patches:
        if bias is None:
            raise PatchTargetError(f"bias patch {bias_patches[0].key!r} on a Linear without bias")
        base_b = bias.to(device=device, dtype=torch.float32)
        db = patched_weight(base_b, bias_patches) - base_b
    return LinearAdapter(dw, db)
