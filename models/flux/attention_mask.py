"""Attention masks carried by conditionings (ComfyUI's `attention_mask`, e.g. from StyleModelApply's
attn_bias): additive biases over the joint [text ; image] sequence, stored with the image part at a
reference grid (`attention_mask_img_shape`) and resized to the sampled latent's token grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def upscale_dit_mask(mask: Tensor, size_in: tuple[int, int], size_out: tuple[int, int]) -> Tensor:
    """Resize the image quadrants of a [B, T + h*w, T + h*w] mask from grid `size_in` to `size_out`
    (bilinear, each image axis separately), text quadrants unchanged (ComfyUI's upscale_dit_mask)."""
    if tuple(size_in) == tuple(size_out):
        return mask
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    hi, wi = size_in
    ho, wo = size_out
    t = mask.shape[1] - hi * wi
    txt_txt, txt_img = mask[:, :t, :t], mask[:, :t, t:]
    img_txt, img_img = mask[:, t:, :t], mask[:, t:, t:]
    txt_img = F.interpolate(rearrange(txt_img, "b t (h w) -> b t h w", h=hi), size=size_out, mode="bilinear")
    txt_img = rearrange(txt_img, "b t h w -> b t (h w)")
    img_txt = F.interpolate(rearrange(img_txt, "b (h w) t -> b t h w", h=hi), size=size_out, mode="bilinear")
    img_txt = rearrange(img_txt, "b t h w -> b (h w) t")
    img_img = F.interpolate(rearrange(img_img, "b q (h w) -> b q h w", h=hi), size=size_out, mode="bilinear")
    img_img = rearrange(img_img, "b (hk wk) hq wq -> b (hq wq) hk wk", hk=hi)
    img_img = F.interpolate(img_img, size=size_out, mode="bilinear")
    img_img = rearrange(img_img, "b (hq wq) hk wk -> b (hk wk) (hq wq)", hq=ho)
    return torch.cat((torch.cat((txt_txt, txt_img), dim=2), torch.cat((img_txt, img_img), dim=2)), dim=1)


def joint_attention_bias(
    mask: Tensor,
    size_in: tuple[int, int],
    grid: tuple[int, int],
    extra_tokens: int = 0,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """A conditioning's mask as an additive SDPA bias [B, 1, N, N] for the sampled grid; bool masks become
    0 / -inf, and `extra_tokens` (Kontext references after the image) get no bias."""
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    # -inf (a log(0) bias) would turn into NaN where interpolation weighs it by 0; -1e9 masks as exactly
    full = upscale_dit_mask(mask.float().clamp(min=-1e9), size_in, grid)
    if extra_tokens:
        full = F.pad(full, (0, extra_tokens, 0, extra_tokens))
    return full.unsqueeze(1).to(dtype)
