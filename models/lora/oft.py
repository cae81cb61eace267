"""OFT (orthogonal fine-tuning, LyCORIS "diag-OFT"): a block-diagonal rotation of a weight's output rows.

The facts this follows (ComfyUI `comfy/weight_adapter/oft.py`: OFTAdapter.load/calculate_weight,
OFTDiff, OFTAdapter.create_train; LyCORIS `lycoris/modules/diag_oft.py`, whose reading ComfyUI ports):
- File keys per module: `<prefix>.oft_blocks` [k, n, n] (read only when 3-D; k blocks of size n,
  k * n = the weight's output features), optional `<prefix>.rescale` ([out, 1]: per-row factor),
  `<prefix>.alpha` (0-d): a *constraint* on the rotation, not a scale; no alpha means none.
- Q = B - B^T per block (skew-symmetric). With alpha > 0, when ||Q||_F (one norm over all blocks)
  + 1e-8 exceeds alpha, Q becomes Q * alpha / (||Q||_F + 1e-8). (LyCORIS multiplies its stored
  constraint by the output size before use; ComfyUI, and we, use alpha as stored.)
- R = (I + Q)(I - Q)^-1, the Cayley transform: orthogonal for skew-symmetric Q, I for Q = 0.
- Rows of block j become R_j^T W_j (einsum "k n m, k n ... -> k m ..."); rescale then scales rows.
- ComfyUI's trainer starts from zero blocks (R = I, the base weight exactly), takes the block size
  and count from `factorization(out, rank)` (block size the smaller factor), alpha 1.0, no rescale,
  and saves `<module>.oft_blocks` and `<module>.alpha`.
- Strength s: LyCORIS blends R_s = s R + (1 - s) I, i.e. W + s (R^T W - W); ComfyUI's loader applies
  s twice (W + s^2 (R^T W - W)) and ignores rescale. We stay linear in s and apply rescale
  (W + s (rescale R^T W - W)); at s = 1 without rescale all three agree.
"""

from __future__ import annotations

import torch
from torch import Tensor


def oft_block_size(out_features: int, rank: int) -> int:
    """Block size for `out_features` rows at `rank`: the largest divisor of out_features that is at
    most rank and at most sqrt(out_features) (ComfyUI's `factorization`, smaller factor; rank itself
    when it divides out_features and rank^2 <= out_features)."""
    best = 1
    for m in range(2, min(rank, out_features) + 1):
        if m * m > out_features:
            break
        if out_features % m == 0:
            best = m
    return best


def cayley_rotation(blocks: Tensor, constraint: float | None) -> Tensor:
    """R [k, n, n] = (I + Q)(I - Q)^-1 with Q the (norm-bounded) skew part of `blocks` [k, n, n].

    The bound is a clamp rather than a branch, so it also runs on meta tensors (shape checks).
    """
    q = blocks - blocks.transpose(1, 2)
    if constraint is not None and constraint > 0:
        q = q * (constraint / (q.norm() + 1e-8)).clamp(max=1.0)
    eye = torch.eye(blocks.shape[-1], device=blocks.device, dtype=blocks.dtype)
    # (I + Q) and (I - Q)^-1 commute (both are functions of Q): solve instead of inverting
    return torch.linalg.solve(eye - q, eye + q)


def rotate_rows(rotation: Tensor, weight: Tensor) -> Tensor:
    """R^T applied block by block to the rows (dim 0) of `weight`: rows k*n .. k*n+n-1 by R_k^T."""
    k, n, _ = rotation.shape
    grouped = weight.reshape(k, n, *weight.shape[1:])
    return torch.einsum("knm,kn...->km...", rotation, grouped).reshape(weight.shape)


def rotate_features(rotation: Tensor, y: Tensor) -> Tensor:
    """The same rotation on the last dim of a layer output y [..., out]: (W' x) = R^T (W x) per block."""
    k, n, _ = rotation.shape
    grouped = y.reshape(*y.shape[:-1], k, n)
    return torch.einsum("knm,...kn->...km", rotation, grouped).reshape(y.shape)


def oft_weight(weight: Tensor, blocks: Tensor, constraint: float | None, rescale: Tensor | None) -> Tensor:
    """The fully adapted weight rescale * R^T W (strength 1), in `weight`'s dtype and device."""
    rotation = cayley_rotation(blocks.to(device=weight.device, dtype=weight.dtype), constraint)
    out = rotate_rows(rotation, weight)
    if rescale is not None:
        out = out * rescale.to(device=weight.device, dtype=weight.dtype).reshape(
            -1, *[1] * (weight.dim() - 1)
        )
    return out
