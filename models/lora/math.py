"""Weight-patch arithmetic: what a `WeightPatch` does to the tensor it names, in float32.

Formulas (flux-formats reference §7.1, 7.5, 7.6), with s = patch.strength, c = alpha / rank
(1 when the file stores no alpha) and W the target (the base tensor, or its `offset` slice, after
`reshape` zero-padding and the `base_strength` factor):

- diff:  W + s * D                         set:  W + s * (V - W)  (s = 1: V exactly)
- lora:  W + s * c * (up @ down)           rank = down.shape[0]; with a LoCon `mid` core (conv
         kernels) down becomes mid contracted with down over the rank.
- loha:  W + s * c * (w1a @ w1b) * (w2a @ w2b)   rank = w1b.shape[0] (CP cores t1/t2 for convs)
- lokr:  W + s * c * kron(w1, w2)           w1 = w1a @ w1b, w2 = w2a @ w2b when decomposed;
         rank = w2b.shape[0] if w2 is decomposed, else w1b.shape[0]; neither: c = 1.
- oft:   W + s * (rescale * R^T W - W)      R: block-diagonal Cayley rotation of `blocks` [k, n, n]
         acting on the output rows, alpha bounding its skew part (`models.lora.oft` states the
         sources); no rescale: factor 1.
- DoRA (a `dora_scale` slot, shape [out, 1] or [1, in]): V = W + c * delta, re-normalised to the
  stored magnitude along its axis, V' = dora_scale * V / (||V|| + eps), and W + s * (V' - W).
  The norm is that of W + delta, as DoRA (Liu et al. 2024), PEFT and LyCORIS define it; ComfyUI
  divides by the norm of W alone when the magnitude is per output row.

A patch at strength 0 leaves W bit-for-bit unchanged (only `reshape` and `base_strength` act).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from models.patches import WeightPatch

from .oft import oft_weight


class PatchShapeError(ValueError):
    """A patch's tensors do not fit the tensor it names."""


def _f32(t: Tensor, like: Tensor) -> Tensor:
    return t.to(device=like.device, dtype=torch.float32)


def pad_to_shape(weight: Tensor, shape: Sequence[int]) -> Tensor:
    """`weight` copied into the leading corner of a zero tensor of `shape` (no dimension may shrink)."""
    shape = tuple(int(n) for n in shape)
    if tuple(weight.shape) == shape:
        return weight
    if len(shape) != weight.dim() or any(n < o for n, o in zip(shape, weight.shape)):
        raise PatchShapeError(
            f"cannot reshape {tuple(weight.shape)} to {shape}: only zero-padding is supported"
        )
    out = weight.new_zeros(shape)
    out[tuple(slice(0, n) for n in weight.shape)] = weight
    return out


def _tucker(core: Tensor, b: Tensor, a: Tensor) -> Tensor:
    """CP/Tucker factor: core [i, j, kh, kw] with b [j, r] and a [i, p] -> [p, r, kh, kw]."""
    return torch.einsum("ijkl,jr,ip->prkl", core, b, a)


def _lora_delta(named: dict[str, Tensor], like: Tensor) -> tuple[Tensor, int]:
    up, down = _f32(named["up"], like), _f32(named["down"], like)
    rank = int(down.shape[0])
    if "mid" in named:  # LoCon: rank-space core with the kernel size, [r, r, kh, kw]
        mid = _f32(named["mid"], like)
        down = torch.einsum("mi,mjkl->jikl", down.flatten(1), mid)
    return up.flatten(1) @ down.flatten(1), rank


def _loha_delta(named: dict[str, Tensor], like: Tensor) -> tuple[Tensor, int]:
    w1a, w1b, w2a, w2b = (_f32(named[k], like) for k in ("w1a", "w1b", "w2a", "w2b"))
    if "t1" in named and "t2" in named:
        m1 = _tucker(_f32(named["t1"], like), w1b, w1a)
        m2 = _tucker(_f32(named["t2"], like), w2b, w2a)
    else:
        m1, m2 = w1a @ w1b, w2a @ w2b
    return m1 * m2, int(w1b.shape[0])


def _lokr_delta(named: dict[str, Tensor], like: Tensor) -> tuple[Tensor, int | None]:
    rank: int | None = None
    if "w1" in named:
        w1 = _f32(named["w1"], like)
    else:
        w1b = _f32(named["w1b"], like)
        w1, rank = _f32(named["w1a"], like) @ w1b, int(w1b.shape[0])
    if "w2" in named:
        w2 = _f32(named["w2"], like)
    else:
        w2a, w2b = _f32(named["w2a"], like), _f32(named["w2b"], like)
        w2 = _tucker(_f32(named["t2"], like), w2b, w2a) if "t2" in named else w2a @ w2b
        rank = int(w2b.shape[0])
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2), rank


def low_rank_delta(patch: WeightPatch, like: Tensor) -> tuple[Tensor, float]:
    """(unscaled delta, scale c = alpha / rank) of a lora/loha/lokr patch, float32 on like's device."""
    named = patch.named()
    if patch.kind == "lora":
        delta, rank = _lora_delta(named, like)
    elif patch.kind == "loha":
        delta, rank = _loha_delta(named, like)
    elif patch.kind == "lokr":
        delta, maybe_rank = _lokr_delta(named, like)
        if maybe_rank is None:  # neither factor decomposed: LyCORIS ignores alpha
            return delta, 1.0
        rank = maybe_rank
    else:
        raise ValueError(f"patch {patch.key!r}: {patch.kind!r} is not a low-rank kind")
    scale = 1.0 if patch.alpha is None else patch.alpha / rank
    return delta, scale


def _fit(delta: Tensor, target: Tensor, patch: WeightPatch) -> Tensor:
    if delta.numel() != target.numel():
        raise PatchShapeError(
            f"patch {patch.key!r} ({patch.kind}, from {patch.source or 'unknown'}): delta has shape "
            f"{tuple(delta.shape)}, the weight {tuple(target.shape)}"
        )
    return delta.reshape(target.shape)


def _apply_oft(target: Tensor, patch: WeightPatch, strength: float) -> None:
    """An oft patch on the float32 slice `target`, in place."""
    stored, rescale = patch.tensor("blocks"), patch.tensor("rescale")
    assert stored is not None  # the required slot of "oft"
    blocks = _f32(stored, target)
    rows = target.shape[0] if target.dim() else 0
    if blocks.dim() != 3 or blocks.shape[1] != blocks.shape[2] or blocks.shape[0] * blocks.shape[1] != rows:
        raise PatchShapeError(
            f"patch {patch.key!r} (oft, from {patch.source or 'unknown'}): blocks {tuple(blocks.shape)} "
            f"do not tile the {rows} rows of {tuple(target.shape)}"
        )
    if rescale is not None and rescale.numel() != rows:
        raise PatchShapeError(
            f"patch {patch.key!r} (oft): rescale has {rescale.numel()} values for {rows} rows"
        )
    adapted = oft_weight(target, blocks, patch.alpha, None if rescale is None else _f32(rescale, target))
    if strength == 1.0:
        target.copy_(adapted)
    else:
        target.add_(adapted - target, alpha=strength)


def _dora(target: Tensor, delta: Tensor, magnitude: Tensor, strength: float) -> Tensor:
    """DoRA result for the slice `target` (float32); see the module doc."""
    merged = target + delta
    magnitude = _f32(magnitude, target)
    if magnitude.shape[0] == merged.shape[0] and magnitude.numel() == merged.shape[0]:
        norm = merged.reshape(merged.shape[0], -1).norm(dim=1)
        norm = norm.reshape(merged.shape[0], *[1] * (merged.dim() - 1))
        magnitude = magnitude.reshape(norm.shape)
    else:
        norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1)
        norm = norm.reshape(1, merged.shape[1], *[1] * (merged.dim() - 2))
        magnitude = magnitude.reshape(norm.shape)
    normalised = merged * (magnitude / (norm + torch.finfo(torch.float32).eps))
    if strength == 1.0:
        return normalised
    return target + strength * (normalised - target)


def _source_tensor(patch: WeightPatch, like: Tensor) -> Tensor:
    """The diff/set tensor, with its own `inner` patches applied first."""
    value = patch.tensors[0]
    if patch.inner:
        return patched_weight(value.to(like.device), patch.inner)
    return _f32(value, like)


def apply_patch(weight: Tensor, patch: WeightPatch) -> Tensor:
    """One patch applied to the float32 tensor `weight` (modified in place unless reshaped); returns it."""
    if patch.reshape is not None:
        weight = pad_to_shape(weight, patch.reshape)
    target = weight.narrow(*patch.offset) if patch.offset is not None else weight
    if patch.base_strength != 1.0:
        target.mul_(patch.base_strength)
    s = patch.strength
    if s == 0.0:
        return weight
    if patch.kind in ("diff", "set"):
        value = _fit(_source_tensor(patch, target), target, patch)
        if patch.kind == "diff":
            target.add_(value, alpha=s)
        elif s == 1.0:
            target.copy_(value)
        else:
            target.add_(value - target, alpha=s)
        return weight
    if patch.kind == "oft":
        _apply_oft(target, patch, s)
        return weight
    delta, scale = low_rank_delta(patch, target)
    delta = _fit(delta, target, patch)
    if patch.dora_scale is not None:
        target.copy_(_dora(target, delta * scale, patch.dora_scale, s))
    else:
        target.add_(delta, alpha=s * scale)
    return weight


def patched_weight(base: Tensor, patches: Sequence[WeightPatch]) -> Tensor:
    """`patches` applied in order to a float32 copy of `base`; `base` itself is never modified.

    base: any floating dtype (fp8 included) on any device; the result is float32 on the same device,
    of base's shape unless a patch reshapes it. Raises PatchShapeError when a patch does not fit.
    """
    weight = base.detach().to(torch.float32, copy=True)
    for patch in patches:
        weight = apply_patch(weight, patch)
    return weight


def weight_delta(patch: WeightPatch, base_fp32: Tensor) -> Tensor:
    """What `patch` adds to `base_fp32`: patched - base, float32, of the patched shape.

    For forward-time (bypass) adapters: y = x @ (W + delta)^T keeps W untouched. A `reshape` patch
    pads the base with zeros, so the delta there is the new columns' values.
    """
    base = base_fp32.detach().to(torch.float32)
    result = apply_patch(base.clone(), patch)
    return result - pad_to_shape(base, result.shape)


def lora_factors(patch: WeightPatch) -> tuple[Tensor, Tensor] | None:
    """(B, A), float32, with B @ A the delta of a plain LoRA patch on its target (the `offset` slice).

    B = strength * alpha / rank * up [out, r], A = down [r, in]: a forward-time adapter can add
    (x @ A.T) @ B.T at rank-r cost instead of holding a full delta. None for every other patch
    (diff/set, LoHa/LoKr, DoRA, a LoCon core, reshape, base_strength).
    """
    if patch.kind != "lora" or patch.reshape is not None or patch.base_strength != 1.0:
        return None
    if patch.tensor("mid") is not None or patch.dora_scale is not None:
        return None
    up, down = patch.tensor("up"), patch.tensor("down")
    assert up is not None and down is not None  # required slots of "lora"
    if up.dim() != 2 or down.dim() != 2:
        return None
    scale = 1.0 if patch.alpha is None else patch.alpha / down.shape[0]
    return up.float() * (patch.strength * scale), down.float()
