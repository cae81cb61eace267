"""Run a FLUX transformer on latent images: pad, pack, build ids, add Kontext references, unpack."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..formats.fp8 import module_compute_dtype
from .extensions import FluxExtensions
from .model import Flux
from .packing import make_image_ids, make_text_ids, pack_latents, unpack_latents

REF_METHODS = ("offset", "index", "uxo")


def _pad_even(x: Tensor) -> Tensor:
    pad_h, pad_w = x.shape[-2] % 2, x.shape[-1] % 2
    if not (pad_h or pad_w):
        return x
    # circular like ComfyUI, so odd-sized latents match its results
    return F.pad(x, (0, pad_w, 0, pad_h), mode="circular")


def _per_sample(value: Tensor, batch: int, name: str) -> Tensor:
    value = value.reshape(-1)
    if value.numel() == 1:
        return value.expand(batch)
    if value.numel() != batch:
        raise ValueError(f"{name} has {value.numel()} values for a batch of {batch}")
    return value


def _batched(x: Tensor, batch: int, name: str) -> Tensor:
    if x.shape[0] == batch:
        return x
    if x.shape[0] == 1:
        return x.expand(batch, *x.shape[1:])
    raise ValueError(f"{name} has batch {x.shape[0]}, expected 1 or {batch}")


def reference_offsets(
    target_hw: tuple[int, int], ref_sizes: Sequence[tuple[int, int]], method: str = "offset"
) -> list[tuple[int, int, int]]:
    """(index, h_offset, w_offset) per reference, offsets in latent pixels (ComfyUI's three methods).

    offset: index 1, each next reference placed below or right of the previous ones (no overlap);
    index: reference k gets index k, no offsets; uxo: index 0, offsets start after the target extent.
    """
    if method not in REF_METHODS:
        raise ValueError(f"reference latent method {method!r} is not one of {REF_METHODS}")
    out = []
    h = w = 0
    for k, (rh, rw) in enumerate(ref_sizes):
        if method == "index":
            out.append((k + 1, 0, 0))
        elif method == "uxo":
            out.append((0, target_hw[0] + h, target_hw[1] + w))
            h, w = h + rh, w + rw
        else:
            h_off, w_off = (0, w) if rh + h > rw + w else (h, 0)
            out.append((1, h_off, w_off))
            h, w = max(h, rh + h_off), max(w, rw + w_off)
    return out


def flux_forward_latent(
    model: Flux,
    x: Tensor,
    t: Tensor | float,
    context: Tensor,
    pooled: Tensor,
    guidance: Tensor | float | None = None,
    ref_latents: Sequence[Tensor] = (),
    extensions: FluxExtensions | None = None,
    ref_method: str = "offset",
) -> Tensor:
    """Velocity for latent images.

    Args:
        model: a Flux transformer.
        x: [B, C, H, W] scaled latents (C = in_channels / 4: 16, or 32 / 96 with concat conditioning).
        t: [B] or scalar flow time in 0..1.
        context: [B or 1, T, context_in_dim]; pooled: [B or 1, vec_in_dim].
        guidance: [B] or scalar distilled guidance, None for none.
        ref_latents: Kontext references [B or 1, in_channels / 4, h, w] (scaled), appended as extra
            tokens with their own ids (see `reference_offsets`) and dropped from the output.
        extensions: passed through to `Flux.forward`.
        ref_method: "offset" (default), "index" or "uxo".

    Returns: [B, out_channels / 4, H, W] in the model's compute dtype.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be a latent batch [B, C, H, W], got shape {tuple(x.shape)}")
    dtype = module_compute_dtype(model)
    b, _, height, width = x.shape
    padded = _pad_even(x.to(dtype))
    h_tok, w_tok = padded.shape[-2] // 2, padded.shape[-1] // 2
    img = pack_latents(padded)
    img_ids = make_image_ids(b, h_tok, w_tok, device=x.device)
    n_img = img.shape[1]
    if ref_latents:
        sizes = [(int(r.shape[-2]), int(r.shape[-1])) for r in ref_latents]
        placements = reference_offsets((2 * h_tok, 2 * w_tok), sizes, ref_method)
        tokens, ids = [img], [img_ids]
        for k, (ref, (index, h_off, w_off)) in enumerate(zip(ref_latents, placements)):
            ref = _pad_even(_batched(ref, b, f"reference latent {k}").to(device=x.device, dtype=dtype))
            packed = pack_latents(ref)
            if packed.shape[-1] != img.shape[-1]:
                raise ValueError(
                    f"reference latent {k} has {ref.shape[1]} channels, the model takes {img.shape[-1] // 4}"
                )
            tokens.append(packed)
            # offsets are latent pixels; ids count tokens (2x2 latent pixels), rounded as ComfyUI does
            ids.append(
                make_image_ids(
                    b,
                    ref.shape[-2] // 2,
                    ref.shape[-1] // 2,
                    index,
                    (h_off + 1) // 2,
                    (w_off + 1) // 2,
                    device=x.device,
                )
            )
        img, img_ids = torch.cat(tokens, dim=1), torch.cat(ids, dim=1)
    context = _batched(context, b, "context").to(dtype)
    out = model(
        img,
        img_ids,
        context,
        make_text_ids(b, context.shape[1], device=x.device),
        _per_sample(torch.as_tensor(t, dtype=torch.float32, device=x.device), b, "timestep"),
        _batched(pooled, b, "pooled").to(dtype),
        None
        if guidance is None
        else _per_sample(torch.as_tensor(guidance, dtype=torch.float32, device=x.device), b, "guidance"),
        extensions,
    )
    return unpack_latents(out[:, :n_img], 2 * h_tok, 2 * w_tok)[..., :height, :width]
