"""Weights stored in a narrower dtype than they compute in (fp8, optionally ComfyUI "scaled fp8").

`CastLinear` is an `nn.Linear` whose forward casts its weight (times an optional per-tensor scale)
and bias to the compute dtype for that call only; the stored tensors stay fp8, so a FLUX
transformer costs ~1 byte per weight in memory. The loader swaps the class of each affected Linear
while it builds the model, before any handle shares it (no hooks, nothing patched later). The
parameter names are unchanged, so state-dict keys and patches still match the checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

WEIGHT_DTYPES: Mapping[str, torch.dtype | None] = {
    "default": None,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e4m3fn_fast": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
FP8_DTYPES = frozenset({torch.float8_e4m3fn, torch.float8_e5m2})


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in FP8_DTYPES


def weight_dtype_from_name(name: str | None) -> torch.dtype | None:
    """UNETLoader's `weight_dtype` choice -> storage dtype for Linear weights (None: as stored)."""
    if name is None:
        return None
    try:
        return WEIGHT_DTYPES[name]
    except KeyError:
        raise ValueError(f"weight_dtype {name!r} is not one of {list(WEIGHT_DTYPES)}") from None


class CastLinear(nn.Linear):
    """Linear with weight/bias kept in a storage dtype and cast to `compute_dtype` per call.

    Input [..., in_features] in any float dtype (fp8 inputs are upcast to compute_dtype);
    output [..., out_features] in the input's dtype. `scale_weight` (scalar, float32) dequantizes
    ComfyUI scaled-fp8 weights: W = weight.to(dtype) * scale_weight.
    """

    compute_dtype: torch.dtype
    scale_weight: torch.Tensor | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.compute_dtype if is_fp8(x.dtype) else x.dtype
        weight = self.weight.to(dtype)
        if self.scale_weight is not None:
            weight = weight * self.scale_weight.to(device=weight.device, dtype=dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        return F.linear(x.to(dtype), weight, bias)

    @classmethod
    def adopt(cls, linear: nn.Linear, compute_dtype: torch.dtype, scale: torch.Tensor | None = None) -> None:
        """Turn a freshly built Linear into a CastLinear in place (construction time only)."""
        linear.__class__ = cls
        adopted = cast(CastLinear, linear)
        adopted.compute_dtype = compute_dtype
        # not persistent: state_dict() keeps the checkpoint's plain `<layer>.weight` / `.bias` keys
        adopted.register_buffer("scale_weight", scale, persistent=False)


def adopt_cast_linears(
    module: nn.Module, compute_dtype: torch.dtype, scales: Mapping[str, torch.Tensor] | None = None
) -> int:
    """Swap every Linear whose weight is not stored in `compute_dtype` (or that has a scale) to CastLinear.

    `scales` maps module names ("double_blocks.0.img_attn.qkv") to scale_weight tensors.
    Returns the number of Linears swapped.
    """
    scales = scales or {}
    count = 0
    for name, child in module.named_modules():
        if type(child) is not nn.Linear:
            continue
        scale = scales.get(name)
        if child.weight.dtype != compute_dtype or scale is not None:
            CastLinear.adopt(child, compute_dtype, scale)
            count += 1
    return count


def linear_weight_keys(module: nn.Module) -> frozenset[str]:
    """State-dict keys of the weights of every nn.Linear in `module`."""
    return frozenset(
        f"{name}.weight" for name, child in module.named_modules() if isinstance(child, nn.Linear)
    )


def keep_in_compute_dtype_keys(module: nn.Module) -> frozenset[str]:
    """Linear weights a model asks to keep wide (transformers' `_keep_in_fp32_modules`, e.g. T5's `wo`).

    T5's feed-forward casts its activations to `wo.weight.dtype`; an fp8 `wo` would quantize them.
    """
    names: set[str] = set()
    for prefix, child in module.named_modules():
        for keep in getattr(child, "_keep_in_fp32_modules", None) or ():
            for name, sub in child.named_modules():
                if isinstance(sub, nn.Linear) and keep in name.split("."):
                    names.add(f"{prefix}.{name}.weight" if prefix else f"{name}.weight")
    return frozenset(names)


def module_compute_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a loaded module computes in: its CastLinears' compute dtype, else its first float weight."""
    for sub in module.modules():
        if isinstance(sub, CastLinear):
            return sub.compute_dtype
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
