"""Mask nodes that need no model (ComfyUI's MaskToImage, ImageToMask, InvertMask, SolidMask).

MASK values are float32 [B, H, W] in 0..1 (1 = masked); IMAGE values are [B, H, W, C].
"""

from __future__ import annotations

import torch

from executor.schema import MAX_RESOLUTION, Combo, Float, Int, Node, Schema, Typed
from nodes.runtime.types import IMAGE, MASK

IMAGE_CHANNELS = ("red", "green", "blue", "alpha")


class MaskToImage(Node):
    schema = Schema(
        "MaskToImage",
        display_name="Convert Mask to Image",
        category="mask",
        outputs=(IMAGE,),
        inputs=(Typed("mask", "MASK"),),
    )

    @classmethod
    def execute(cls, mask: torch.Tensor) -> tuple[torch.Tensor]:
        # Any leading dims ([H, W], [B, H, W], ...) become the batch; grey -> 3 equal channels.
        grey = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).movedim(1, -1)
        return (grey.expand(-1, -1, -1, 3),)


class ImageToMask(Node):
    schema = Schema(
        "ImageToMask",
        display_name="Convert Image to Mask",
        category="mask",
        outputs=(MASK,),
        inputs=(Typed("image", "IMAGE"), Combo("channel", IMAGE_CHANNELS, legacy_combo=False)),
    )

    @classmethod
    def execute(cls, image: torch.Tensor, channel: str) -> tuple[torch.Tensor]:
        index = IMAGE_CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(
                f"channel {channel!r} asked of an image with {image.shape[-1]} channels "
                f"(shape {tuple(image.shape)})"
            )
        return (image[..., index],)


class InvertMask(Node):
    schema = Schema("InvertMask", category="mask", outputs=(MASK,), inputs=(Typed("mask", "MASK"),))

    @classmethod
    def execute(cls, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - mask,)


class SolidMask(Node):
    schema = Schema(
        "SolidMask",
        category="mask",
        outputs=(MASK,),
        inputs=(
            Float("value", 1.0, min=0.0, max=1.0, step=0.01),
            Int("width", 512, min=1, max=MAX_RESOLUTION, step=1),
            Int("height", 512, min=1, max=MAX_RESOLUTION, step=1),
        ),
    )

    @classmethod
    def execute(cls, value: float, width: int, height: int) -> tuple[torch.Tensor]:
        return (torch.full((1, height, width), value, dtype=torch.float32),)


NODES = (MaskToImage, ImageToMask, InvertMask, SolidMask)
