"""Resizing of channel-first tensors as ComfyUI's latent nodes do it (center crop, torch modes, bislerp)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

LATENT_UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
CROP_METHODS = ("disabled", "center")


def center_crop_to_aspect(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop [..., H, W] symmetrically so its aspect ratio matches width:height (ComfyUI's rounding)."""
    old_h, old_w = x.shape[-2], x.shape[-1]
    old_aspect, new_aspect = old_w / old_h, width / height
    dx = dy = 0
    if old_aspect > new_aspect:
        dx = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        dy = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return x.narrow(-2, dy, old_h - 2 * dy).narrow(-1, dx, old_w - 2 * dx)


def resize(x: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Resize [B, C, H, W] to [B, C, height, width] with one of LATENT_UPSCALE_METHODS (or "lanczos" for images)."""
    if method not in LATENT_UPSCALE_METHODS and method != "lanczos":
        raise ValueError(f"unknown upscale method {method!r}; expected one of {LATENT_UPSCALE_METHODS}")
    if crop == "center":
        x = center_crop_to_aspect(x, width, height)
    if method == "bislerp":
        return bislerp(x, width, height)
    if method == "lanczos":
        return lanczos(x, width, height)
    return F.interpolate(x, size=(height, width), mode=method)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b [N, C] by t [N, 1]; magnitudes interpolate linearly."""
    norm_a = a.norm(dim=-1, keepdim=True)
    norm_b = b.norm(dim=-1, keepdim=True)
    unit_a = a / norm_a
    unit_b = b / norm_b
    unit_a[norm_a.squeeze(-1) == 0] = 0.0  # zero vectors have no direction
    unit_b[norm_b.squeeze(-1) == 0] = 0.0
    dot = (unit_a * unit_b).sum(-1, keepdim=True)
    omega = torch.acos(dot.clamp(-1.0, 1.0))
    sin_omega = torch.sin(omega)
    out = (torch.sin((1.0 - t) * omega) / sin_omega) * unit_a + (torch.sin(t * omega) / sin_omega) * unit_b
    out = out * (norm_a * (1.0 - t) + norm_b * t)
    # Nearly parallel: keep a; nearly opposite: fall back to a straight line.
    parallel = (dot > 1 - 1e-5).squeeze(-1)
    opposite = (dot < 1e-5 - 1).squeeze(-1)
    out[parallel] = a[parallel]
    out[opposite] = (a * (1.0 - t) + b * t)[opposite]
    return out


def _neighbours(old: int, new: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of `new` output positions: left index, right index and fraction, on bilinear's grid."""
    pos = torch.arange(old, dtype=torch.float32).reshape(1, 1, 1, -1)
    pos = F.interpolate(pos, size=(1, new), mode="bilinear").reshape(-1)
    left = pos.floor()
    frac = pos - left
    right = torch.clamp(torch.arange(old) + 1, max=old - 1).float().reshape(1, 1, 1, -1)
    right = F.interpolate(right, size=(1, new), mode="bilinear").reshape(-1).floor()
    return left.long(), right.long(), frac


def bislerp(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize [B, C, H, W] by slerping channel vectors between neighbours, first along W then along H."""
    dtype = x.dtype
    x = x.float()
    b, c, h, w = x.shape
    left, right, frac = _neighbours(w, width)
    rows = x.permute(0, 2, 3, 1)  # [B, H, W, C]
    a = rows[:, :, left].reshape(-1, c)
    bb = rows[:, :, right].reshape(-1, c)
    t = frac.reshape(1, 1, width, 1).expand(b, h, width, 1).reshape(-1, 1)
    x = _slerp(a, bb, t).reshape(b, h, width, c)
    top, bottom, frac = _neighbours(h, height)
    a = x[:, top].reshape(-1, c)
    bb = x[:, bottom].reshape(-1, c)
    t = frac.reshape(1, height, 1, 1).expand(b, height, width, 1).reshape(-1, 1)
    out = _slerp(a, bb, t).reshape(b, height, width, c).permute(0, 3, 1, 2)
    return out.to(dtype)


def lanczos(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize images [B, C, H, W] in 0..1 with Pillow's Lanczos filter (through 8-bit, as ComfyUI does)."""
    out = []
    for image in images:
        array = np.clip(image.movedim(0, -1).float().cpu().numpy() * 255.0, 0, 255).astype(np.uint8)
        pil = Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array)
        resized = np.asarray(pil.resize((width, height), resample=Image.Resampling.LANCZOS), dtype=np.float32)
        tensor = torch.from_numpy(resized / 255.0)
        out.append(tensor.unsqueeze(-1) if tensor.ndim == 2 else tensor)
    return torch.stack(out).movedim(-1, 1).to(images.dtype)
