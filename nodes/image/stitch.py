"""ImageStitch: place a second image right of, below, left of or above the first (ComfyUI's node of that name)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from executor.schema import Boolean, Combo, Int, Node, Schema, Typed
from models.imaging.resize import resize
from nodes.runtime.types import IMAGE

DIRECTIONS = ("right", "down", "left", "up")
SPACING_COLORS = {
    "white": 1.0,
    "black": 0.0,
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
}


def match_channels(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Give two IMAGE batches the same channel count by appending channels of 1 (an opaque alpha)."""
    channels = max(a.shape[-1], b.shape[-1])

    def widen(x: torch.Tensor) -> torch.Tensor:
        return x if x.shape[-1] == channels else F.pad(x, (0, channels - x.shape[-1]), value=1.0)

    return widen(a), widen(b)


def match_batch(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat the last image of the shorter batch until both batches have the same length."""
    size = max(a.shape[0], b.shape[0])

    def extend(x: torch.Tensor) -> torch.Tensor:
        return x if x.shape[0] == size else torch.cat([x, x[-1:].expand(size - x.shape[0], *x.shape[1:])])

    return extend(a), extend(b)


def _center_pad(x: torch.Tensor, dim: int, size: int, value: float) -> torch.Tensor:
    """Pad IMAGE [B, H, W, C] along H (dim 1) or W (dim 2) to `size`, half before and the rest after."""
    missing = size - x.shape[dim]
    if missing <= 0:
        return x
    before, after = missing // 2, missing - missing // 2
    pads = (0, 0, before, after) if dim == 2 else (0, 0, 0, 0, before, after)
    return F.pad(x, pads, value=value)


def spacer(shape: tuple[int, int, int, int], color: str, like: torch.Tensor) -> torch.Tensor:
    """A band [B, H, W, C] of a named color; a 4th channel (alpha) is opaque."""
    value = SPACING_COLORS[color]
    band = torch.zeros(shape, dtype=like.dtype, device=like.device)
    rgb = value if isinstance(value, tuple) else (value,) * 3
    for index, channel_value in enumerate(rgb[: shape[-1]]):
        band[..., index] = channel_value
    if shape[-1] == 4:
        band[..., 3] = 1.0
    return band


class ImageStitch(Node):
    schema = Schema(
        "ImageStitch",
        display_name="Image Stitch",
        category="image/transform",
        outputs=(IMAGE,),
        description=(
            "Stitches image2 to image1 in the specified direction.\n"
            "If image2 is not provided, returns image1 unchanged.\n"
            "Optional spacing can be added between images."
        ),
        search_aliases=("combine images", "join images", "concatenate images", "side by side"),
        inputs=(
            Typed("image1", "IMAGE"),
            Combo("direction", DIRECTIONS, default="right", legacy_combo=False),
            Boolean("match_image_size", True),
            Int("spacing_width", 0, min=0, max=1024, step=2),
            Combo("spacing_color", tuple(SPACING_COLORS), default="white", legacy_combo=False),
            Typed("image2", "IMAGE", optional=True),
        ),
    )

    @classmethod
    def execute(
        cls,
        image1: torch.Tensor,
        direction: str,
        match_image_size: bool,
        spacing_width: int,
        spacing_color: str,
        image2: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor]:
        if image2 is None:
            return (image1,)
        image1, image2 = match_batch(image1, image2)
        horizontal = direction in ("left", "right")
        if match_image_size:
            # image2 takes image1's height (side by side) or width (stacked), keeping its aspect ratio.
            (h1, w1), (h2, w2) = image1.shape[1:3], image2.shape[1:3]
            aspect = w2 / h2
            width, height = (int(h1 * aspect), h1) if horizontal else (w1, int(w1 / aspect))
            image2 = resize(image2.movedim(-1, 1), width, height, "lanczos", "disabled").movedim(1, -1)
        else:
            value = SPACING_COLORS[spacing_color]
            fill = value if isinstance(value, float) else 0.0
            dim = 1 if horizontal else 2
            size = max(image1.shape[dim], image2.shape[dim])
            image1, image2 = _center_pad(image1, dim, size, fill), _center_pad(image2, dim, size, fill)
        image1, image2 = match_channels(image1, image2.to(image1))
        parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
        if spacing_width > 0:
            spacing_width += spacing_width % 2  # kept even, as ComfyUI does
            batch, channels = image1.shape[0], image1.shape[-1]
            if horizontal:
                shape = (batch, max(image1.shape[1], image2.shape[1]), spacing_width, channels)
            else:
                shape = (batch, spacing_width, max(image1.shape[2], image2.shape[2]), channels)
            parts.insert(1, spacer(shape, spacing_color, image1))
        return (torch.cat(parts, dim=2 if horizontal else 1),)
