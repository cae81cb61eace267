"""Image nodes that need no model: scaling, inversion, batching, size, blank images, crop and outpaint padding.

All follow ComfyUI's nodes of the same names (inputs, defaults, ranges, outputs and results).
IMAGE values are float32 [B, H, W, C] in 0..1; inputs are never modified in place.
"""

from __future__ import annotations

import math

import torch

from executor.schema import MAX_RESOLUTION, Combo, Float, Int, Node, Output, Schema, Typed
from models.imaging.resize import resize
from nodes.image.canny import Canny
from nodes.image.stitch import ImageStitch, match_channels
from nodes.runtime.types import IMAGE, MASK

UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROP_METHODS = ("disabled", "center")
# ComfyUI lists "bilinear" twice for this node; the list is kept as is so saved workflows match.
MAX_DIMENSION_METHODS = ("area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic")


def scale_image(
    image: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled"
) -> torch.Tensor:
    """Resize IMAGE [B, H, W, C] to [B, height, width, C] the way ComfyUI's common_upscale does."""
    if width < 1 or height < 1:
        raise ValueError(f"cannot scale an image to {width}x{height}; both sides must be at least 1 pixel")
    return resize(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


class ImageScale(Node):
    schema = Schema(
        "ImageScale",
        display_name="Upscale Image",
        category="image/upscaling",
        outputs=(IMAGE,),
        inputs=(
            Typed("image", "IMAGE"),
            Combo("upscale_method", UPSCALE_METHODS),
            Int("width", 512, min=0, max=MAX_RESOLUTION, step=1),
            Int("height", 512, min=0, max=MAX_RESOLUTION, step=1),
            Combo("crop", CROP_METHODS),
        ),
    )

    @classmethod
    def execute(
        cls, image: torch.Tensor, upscale_method: str, width: int, height: int, crop: str
    ) -> tuple[torch.Tensor]:
        if width == 0 and height == 0:
            return (image,)
        h, w = image.shape[1:3]
        # A zero side keeps the aspect ratio.
        if width == 0:
            width = max(1, round(w * height / h))
        elif height == 0:
            height = max(1, round(h * width / w))
        return (scale_image(image, width, height, upscale_method, crop),)


class ImageScaleBy(Node):
    schema = Schema(
        "ImageScaleBy",
        display_name="Upscale Image By",
        category="image/upscaling",
        outputs=(IMAGE,),
        inputs=(
            Typed("image", "IMAGE"),
            Combo("upscale_method", UPSCALE_METHODS),
            Float("scale_by", 1.0, min=0.01, max=8.0, step=0.01),
        ),
    )

    @classmethod
    def execute(cls, image: torch.Tensor, upscale_method: str, scale_by: float) -> tuple[torch.Tensor]:
        h, w = image.shape[1:3]
        return (scale_image(image, round(w * scale_by), round(h * scale_by), upscale_method),)


class ImageScaleToTotalPixels(Node):
    schema = Schema(
        "ImageScaleToTotalPixels",
        category="image/upscaling",
        outputs=(IMAGE,),
        inputs=(
            Typed("image", "IMAGE"),
            Combo("upscale_method", UPSCALE_METHODS, legacy_combo=False),
            Float("megapixels", 1.0, min=0.01, max=16.0, step=0.01),
            Int("resolution_steps", 1, min=1, max=256, extra={"advanced": True}),
        ),
    )

    @classmethod
    def execute(
        cls, image: torch.Tensor, upscale_method: str, megapixels: float, resolution_steps: int
    ) -> tuple[torch.Tensor]:
        h, w = image.shape[1:3]
        # A megapixel here is 1024 * 1024 pixels, as in ComfyUI.
        scale_by = math.sqrt(megapixels * 1024 * 1024 / (w * h))
        width = round(w * scale_by / resolution_steps) * resolution_steps
        height = round(h * scale_by / resolution_steps) * resolution_steps
        return (scale_image(image, int(width), int(height), upscale_method),)


class ImageScaleToMaxDimension(Node):
    schema = Schema(
        "ImageScaleToMaxDimension",
        category="image/upscaling",
        outputs=(IMAGE,),
        inputs=(
            Typed("image", "IMAGE"),
            Combo("upscale_method", MAX_DIMENSION_METHODS, legacy_combo=False),
            Int("largest_size", 512, min=0, max=MAX_RESOLUTION, step=1),
        ),
    )

    @classmethod
    def execute(cls, image: torch.Tensor, upscale_method: str, largest_size: int) -> tuple[torch.Tensor]:
        h, w = image.shape[1:3]
        if h > w:
            width, height = round(w / h * largest_size), largest_size
        elif w > h:
            width, height = largest_size, round(h / w * largest_size)
        else:
            width = height = largest_size
        return (scale_image(image, width, height, upscale_method),)


class ImageInvert(Node):
    schema = Schema(
        "ImageInvert",
        display_name="Invert Image",
        category="image",
        outputs=(IMAGE,),
        inputs=(Typed("image", "IMAGE"),),
    )

    @classmethod
    def execute(cls, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - image,)


class ImageBatch(Node):
    schema = Schema(
        "ImageBatch",
        display_name="Batch Images",
        category="image",
        outputs=(IMAGE,),
        inputs=(Typed("image1", "IMAGE"), Typed("image2", "IMAGE")),
    )

    @classmethod
    def execute(cls, image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor]:
        image1, image2 = match_channels(image1, image2)
        if image1.shape[1:] != image2.shape[1:]:
            # The second batch is fitted to the first: bilinear, center-cropped to its aspect ratio.
            image2 = scale_image(image2, image1.shape[2], image1.shape[1], "bilinear", "center")
        return (torch.cat((image1, image2.to(image1)), dim=0),)


class GetImageSize(Node):
    schema = Schema(
        "GetImageSize",
        display_name="Get Image Size",
        category="image",
        inputs=(Typed("image", "IMAGE"),),
        outputs=(Output("INT", "width"), Output("INT", "height"), Output("INT", "batch_size")),
        description="Returns width and height of the image, and passes it through unchanged.",
        search_aliases=("dimensions", "resolution", "image info"),
    )

    @classmethod
    def execute(cls, image: torch.Tensor) -> tuple[int, int, int]:
        return (int(image.shape[2]), int(image.shape[1]), int(image.shape[0]))


class EmptyImage(Node):
    schema = Schema(
        "EmptyImage",
        category="image",
        outputs=(IMAGE,),
        inputs=(
            Int("width", 512, min=1, max=MAX_RESOLUTION, step=1),
            Int("height", 512, min=1, max=MAX_RESOLUTION, step=1),
            Int("batch_size", 1, min=1, max=4096),
            Int("color", 0, min=0, max=0xFFFFFF, step=1, extra={"display": "color"}),
        ),
    )

    @classmethod
    def execute(cls, width: int, height: int, batch_size: int, color: int) -> tuple[torch.Tensor]:
        rgb = (
            torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32)
            / 255.0
        )
        return (rgb.expand(batch_size, height, width, 3).contiguous(),)


class ImageCrop(Node):
    schema = Schema(
        "ImageCrop",
        display_name="Crop Image",
        category="image/transform",
        outputs=(IMAGE,),
        inputs=(
            Typed("image", "IMAGE"),
            Int("width", 512, min=1, max=MAX_RESOLUTION, step=1),
            Int("height", 512, min=1, max=MAX_RESOLUTION, step=1),
            Int("x", 0, min=0, max=MAX_RESOLUTION, step=1),
            Int("y", 0, min=0, max=MAX_RESOLUTION, step=1),
        ),
        search_aliases=("trim",),
    )

    @classmethod
    def execute(cls, image: torch.Tensor, width: int, height: int, x: int, y: int) -> tuple[torch.Tensor]:
        # The corner is clamped inside the image; the far edge simply stops at the border.
        x = min(x, image.shape[2] - 1)
        y = min(y, image.shape[1] - 1)
        return (image[:, y : y + height, x : x + width, :],)


def outpaint_feather(
    height: int, width: int, feathering: int, sides: tuple[bool, bool, bool, bool]
) -> torch.Tensor:
    """Mask [height, width] over the original image: ((f - d) / f)^2 within f pixels of a padded side, else 0.

    `sides` = (top, bottom, left, right) padded; d is the distance to the nearest padded side
    (row i is i from the top, height - i from the bottom; ComfyUI's asymmetric convention).
    """
    top, bottom, left, right = sides
    if not (feathering > 0 and feathering * 2 < height and feathering * 2 < width):
        return torch.zeros((height, width), dtype=torch.float32)
    rows = torch.arange(height, dtype=torch.float32)[:, None]
    cols = torch.arange(width, dtype=torch.float32)[None, :]
    far_h, far_w = torch.full_like(rows, height), torch.full_like(cols, width)
    distance = torch.minimum(
        torch.minimum(rows if top else far_h, (height - rows) if bottom else far_h),
        torch.minimum(cols if left else far_w, (width - cols) if right else far_w),
    )
    ramp = ((feathering - distance) / feathering).square()
    return torch.where(distance < feathering, ramp, torch.zeros(()))


class ImagePadForOutpaint(Node):
    schema = Schema(
        "ImagePadForOutpaint",
        display_name="Pad Image for Outpainting",
        category="image",
        outputs=(IMAGE, MASK),
        inputs=(
            Typed("image", "IMAGE"),
            Int("left", 0, min=0, max=MAX_RESOLUTION, step=8),
            Int("top", 0, min=0, max=MAX_RESOLUTION, step=8),
            Int("right", 0, min=0, max=MAX_RESOLUTION, step=8),
            Int("bottom", 0, min=0, max=MAX_RESOLUTION, step=8),
            Int("feathering", 40, min=0, max=MAX_RESOLUTION, step=1),
        ),
    )

    @classmethod
    def execute(
        cls, image: torch.Tensor, left: int, top: int, right: int, bottom: int, feathering: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, height, width, channels = image.shape
        # New area is mid-grey in the image and 1 (to be generated) in the mask.
        padded = torch.full(
            (batch, height + top + bottom, width + left + right, channels),
            0.5,
            dtype=torch.float32,
            device=image.device,
        )
        padded[:, top : top + height, left : left + width, :] = image
        mask = torch.ones((height + top + bottom, width + left + right), dtype=torch.float32)
        mask[top : top + height, left : left + width] = outpaint_feather(
            height, width, feathering, (top != 0, bottom != 0, left != 0, right != 0)
        )
        return (padded, mask[None])


NODES = (
    ImageScale,
    ImageScaleBy,
    ImageScaleToTotalPixels,
    ImageScaleToMaxDimension,
    ImageInvert,
    ImageStitch,
    ImageBatch,
    GetImageSize,
    EmptyImage,
    ImageCrop,
    ImagePadForOutpaint,
    Canny,
)
