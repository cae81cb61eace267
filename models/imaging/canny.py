"""Canny edge detection in torch.

Canny, "A Computational Approach to Edge Detection" (1986): grey, Gaussian blur, Sobel gradient,
non-maximum suppression along the gradient direction, double threshold and hysteresis. The
conventions are those of kornia.filters.canny (which ComfyUI calls): a 5x5 blur with sigma 1 and
reflected borders, unnormalised Sobel with replicated borders (so a unit step reaches about 2.6),
strict thresholds, and OpenCV's tie rule in the suppression step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# (dy, dx) of the neighbour in direction k = 0..7, counted from +x towards +y in 45 degree steps.
_OFFSETS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))
_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma


def gaussian_kernel1d(size: int, sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian taps [size] centred on the middle tap (half-integer offsets for even sizes).

    Computed in `dtype` itself: exact ties between mirrored pixels then survive, which the
    suppression step's tie rule depends on.
    """
    x = torch.arange(size, dtype=dtype) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    taps = torch.exp(-x.square() / (2.0 * sigma**2))
    return taps / taps.sum()


def _blur(grey: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, 1, H, W] with reflected borders."""
    taps = gaussian_kernel1d(size, sigma, grey.dtype).to(grey.device)
    left, right = (size - 1) // 2, size // 2
    x = F.pad(grey, (left, right, 0, 0), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, size))
    x = F.pad(x, (0, 0, left, right), mode="reflect")
    return F.conv2d(x, taps.view(1, 1, size, 1))


def _sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised Sobel derivatives (d/dx, d/dy) of [B, 1, H, W] with replicated borders."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    h, w = x.shape[-2:]

    def at(dy: int, dx: int) -> torch.Tensor:
        return p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = (at(-1, 1) - at(-1, -1)) + 2 * (at(0, 1) - at(0, -1)) + (at(1, 1) - at(1, -1))
    gy = (at(1, -1) - at(-1, -1)) + 2 * (at(1, 0) - at(-1, 0)) + (at(1, 1) - at(-1, 1))
    return gx, gy


def _suppress(gx: torch.Tensor, gy: torch.Tensor, eps: float) -> torch.Tensor:
    """Gradient magnitude kept only where it is a local maximum along the gradient direction."""
    h, w = gx.shape[-2:]
    # Magnitude one pixel beyond the image is that of a flat pixel, sqrt(eps): the border never wins.
    padded = torch.sqrt(F.pad(gx, (1, 1, 1, 1)).square() + F.pad(gy, (1, 1, 1, 1)).square() + eps)
    magnitude = padded[..., 1 : 1 + h, 1 : 1 + w]
    neighbours = torch.stack([padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in _OFFSETS])
    direction = torch.round(torch.nan_to_num(torch.atan2(gy, gx)) * (4 / math.pi)).long() % 8
    keep = magnitude > padded[..., :1, :1]
    for forward in (direction, (direction + 4) % 8):
        other = neighbours.gather(0, forward[None]).squeeze(0)
        # OpenCV's tie rule: towards +x and +y (directions 0 and 2) an equal neighbour does not suppress.
        ties_ok = (forward == 0) | (forward == 2)
        keep &= (magnitude > other) | (ties_ok & (magnitude == other))
    return magnitude * keep


def _hysteresis(weak: torch.Tensor, strong: torch.Tensor) -> torch.Tensor:
    """Grow `strong` [B, 1, H, W] (bool) through 8-connected `weak` pixels until nothing changes."""
    strong = strong.clone()
    while True:
        reached = F.max_pool2d(strong.float(), 3, stride=1, padding=1) > 0
        grown = strong | (weak & reached)
        if torch.equal(grown, strong):
            return strong
        strong = grown


def canny(
    image: torch.Tensor,
    low_threshold: float,
    high_threshold: float,
    *,
    kernel_size: int = 5,
    sigma: float = 1.0,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Canny edges of images [B, C, H, W] (C = 1 grey, or 3/4 RGB(A), values in 0..1).

    Returns (suppressed gradient magnitude, edges in {0, 1}), both float [B, 1, H, W]. Thresholds are in
    magnitude units; a pixel above `high_threshold` is an edge, one above `low_threshold` is one when
    8-connected to an edge.
    """
    if not 0 < low_threshold <= high_threshold:
        raise ValueError(
            f"Canny needs 0 < low_threshold <= high_threshold, got {low_threshold} and {high_threshold}"
        )
    if image.ndim != 4 or image.shape[1] not in (1, 3, 4):
        raise ValueError(f"Canny expects images [B, 1|3|4, H, W], got shape {tuple(image.shape)}")
    dtype = image.dtype
    x = image.float()
    if x.shape[1] >= 3:
        weights = torch.tensor(_GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x[:, :3] * weights).sum(1, keepdim=True)
    gx, gy = _sobel(_blur(x, kernel_size, sigma))
    magnitude = _suppress(gx, gy, eps)
    edges = _hysteresis(magnitude > low_threshold, magnitude > high_threshold)
    return magnitude.to(dtype), edges.to(dtype)
