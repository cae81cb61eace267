"""Attention and rotary position embedding (RoPE) for the FLUX transformer.

Rotations are kept as unit complex numbers: pair (x_2k, x_2k+1) of a head vector is the complex
number x_2k + i x_2k+1 and RoPE multiplies it by exp(i phi). This is the same as BFL's 2x2 rotation
matrices and diffusers' interleaved cos/sin, in one elementwise kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rope(pos: Tensor, dim: int, theta: int) -> Tensor:
    """Rotations for one axis: positions [B, L] -> complex64 [B, L, dim/2], exp(i pos theta^(-2k/dim)).

    float64 positions give complex128 (float64 reference runs).

    Angles are computed in float64 (positions reach thousands; fp32 angles would lose the low bits).
    """
    if dim % 2:
        raise ValueError(f"RoPE axis size must be even, got {dim}")
    scale = torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim
    omega = 1.0 / (theta**scale)
    angles = pos.to(torch.float64).unsqueeze(-1) * omega
    out = torch.polar(torch.ones_like(angles), angles)
    return out if pos.dtype == torch.float64 else out.to(torch.complex64)


def apply_rope(xq: Tensor, xk: Tensor, pe: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate q and k [B, H, L, D] by pe (complex64 [B, 1, L, D/2]); computed in fp32, returned in x's dtype."""
    return _rotate(xq, pe), _rotate(xk, pe)


def _rotate(x: Tensor, pe: Tensor) -> Tensor:
    real = torch.float64 if pe.dtype == torch.complex128 else torch.float32
    pairs = torch.view_as_complex(x.to(real).unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * pe).flatten(-2).to(x.dtype)


def attention(q: Tensor, k: Tensor, v: Tensor, pe: Tensor, mask: Tensor | None = None) -> Tensor:
    """RoPE + scaled dot-product attention: q, k, v [B, H, L, D] -> [B, L, H*D].

    The one place attention is computed, so a backend choice lands here. `mask` is a bool or
    additive float mask broadcastable to [B, H, L, L].
    """
    q, k = apply_rope(q, k, pe)
    x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return x.transpose(1, 2).flatten(2)
