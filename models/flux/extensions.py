"""Typed extension points of the FLUX transformer forward (ControlNet, IP-Adapter, token hooks).

Everything is optional; a field left at its default costs nothing in the forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor


class ExtraAttention(Protocol):
    """IP-Adapter-style attention for one double block, called after the block's image update.

    `img_q` [B, heads, L_img, head_dim] are the block's image queries after QK-norm, before RoPE;
    `img` [B, L_img, hidden] is the updated image stream. Returns a delta added to `img`.
    """

    def __call__(self, index: int, img_q: Tensor, img: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class TokenState:
    """Token streams after the input embedders: img [B, L, hidden], txt [B, T, hidden], ids [B, *, 3], vec [B, hidden]."""

    img: Tensor
    txt: Tensor
    img_ids: Tensor
    txt_ids: Tensor
    vec: Tensor


TokenHook = Callable[[TokenState], TokenState]


@dataclass(frozen=True)
class FluxExtensions:
    """Optional additions to one `Flux.forward` call.

    - `double_residuals` / `single_residuals`: ControlNet residuals [B, L_r, hidden] added to the image
      tokens after double / single block i (only the first L_r image tokens, so residuals computed
      without Kontext reference tokens still fit). A None entry skips that block. With N residuals for
      D blocks, block i gets residual i // ceil(D / N); with `cyclic_double_residuals` (XLabs
      ControlNets) double block i gets i % N instead (single blocks keep the interval rule).
    - `double_attention`: IP-Adapter callables, each called for every double block (see ExtraAttention).
    - `token_hook`: sees and may replace the token streams before positional encoding (ids included).
      The output keeps only the first L image tokens of the original input.
    - `attention_mask`: bool or additive mask broadcastable to [B, heads, T+L, T+L] for every block.
    """

    double_residuals: tuple[Tensor | None, ...] | None = None
    single_residuals: tuple[Tensor | None, ...] | None = None
    cyclic_double_residuals: bool = False
    double_attention: tuple[ExtraAttention, ...] = ()
    token_hook: TokenHook | None = None
    attention_mask: Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("double_residuals", "single_residuals"):
            value = getattr(self, name)
            if value is not None:
                if len(value) == 0:
                    raise ValueError(f"FluxExtensions.{name} is empty; use None for no residuals")
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "double_attention", tuple(self.double_attention))


NO_EXTENSIONS = FluxExtensions()


def residual_for(
    residuals: tuple[Tensor | None, ...] | None, index: int, blocks: int, cyclic: bool
) -> Tensor | None:
    """The residual block `index` of `blocks` gets (interval or cyclic rule), or None."""
    if not residuals:
        return None
    if cyclic:
        return residuals[index % len(residuals)]
    interval = math.ceil(blocks / len(residuals))
    position = index // interval
    return residuals[position] if position < len(residuals) else None
