"""ComfyUI's per-item dataset transforms: image resize / crop / colour nodes and caption text nodes
(one image or string per call), plus the list shuffles that keep image-text pairs together."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from executor.schema import SEED_MAX, Float, Int, Node, NodeOutput, Output, Schema, String, Typed

# --- image transforms (one image per call, as ComfyUI's per-item dataset nodes) ----------------------


def _to_pil(image: torch.Tensor) -> Image.Image:
    arr = (image[0] if image.ndim == 4 else image).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(arr)


def _from_pil(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]


def _resize_edge(img: Image.Image, edge: int, *, fit_shorter: bool) -> torch.Tensor:
    """Resize (Lanczos) so the shorter (or longer) edge is `edge` pixels, keeping the aspect ratio."""
    w, h = img.size
    width_is_edge = w < h if fit_shorter else w > h
    size = (edge, int(h * edge / w)) if width_is_edge else (int(w * edge / h), edge)
    return _from_pil(img.resize(size, Image.Resampling.LANCZOS))


def _image_node(node_id: str, display: str, category: str, description: str, *extra: Any) -> Schema:
    return Schema(
        node_id, display_name=display, category=category, description=description, experimental=True,
        inputs=(Typed("images", "IMAGE", tooltip="Image to process."), *extra),
        outputs=(Output("IMAGE", "images", tooltip="Processed images"),),
    )  # fmt: skip


class ResizeImagesByShorterEdge(Node):
    schema = _image_node(
        "ResizeImagesByShorterEdge",
        "Resize Images by Shorter Edge",
        "image/transform",
        "Resize images so the shorter edge matches the given size, keeping the aspect ratio.",
        Int("shorter_edge", 512, min=1, max=8192, tooltip="Target dimension for the shorter edge."),
    )

    @classmethod
    def execute(cls, images: torch.Tensor, shorter_edge: int) -> tuple[torch.Tensor]:
        # Only the first image, as ComfyUI's node (one image per call).
        return (_resize_edge(_to_pil(images), shorter_edge, fit_shorter=True),)


class ResizeImagesByLongerEdge(Node):
    schema = _image_node(
        "ResizeImagesByLongerEdge",
        "Resize Images by Longer Edge",
        "image/transform",
        "Resize images so the longer edge matches the given size, keeping the aspect ratio.",
        Int("longer_edge", 1024, min=1, max=8192, tooltip="Target dimension for the longer edge."),
    )

    @classmethod
    def execute(cls, images: torch.Tensor, longer_edge: int) -> tuple[torch.Tensor]:
        return (
            torch.cat([_resize_edge(_to_pil(image), longer_edge, fit_shorter=False) for image in images]),
        )


def _crop(images: torch.Tensor, left: int, top: int, width: int, height: int) -> torch.Tensor:
    return images[:, top : top + height, left : left + width, :]


class CenterCropImages(Node):
    schema = _image_node(
        "CenterCropImages",
        "Crop Image (Center)",
        "image/transform",
        "Center crop an image to the specified dimensions.",
        Int("width", 512, min=1, max=8192, tooltip="Crop width."),
        Int("height", 512, min=1, max=8192, tooltip="Crop height."),
    )

    @classmethod
    def execute(cls, images: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor]:
        h, w = images.shape[1:3]
        return (_crop(images, max(0, (w - width) // 2), max(0, (h - height) // 2), width, height),)


class RandomCropImages(Node):
    schema = _image_node(
        "RandomCropImages",
        "Crop Image (Random)",
        "image/transform",
        "Randomly crop an image to the specified dimensions.",
        Int("width", 512, min=1, max=8192, tooltip="Crop width."),
        Int("height", 512, min=1, max=8192, tooltip="Crop height."),
        Int("seed", 0, min=0, max=SEED_MAX, tooltip="Random seed."),
    )

    @classmethod
    def execute(cls, images: torch.Tensor, width: int, height: int, seed: int) -> tuple[torch.Tensor]:
        rng = np.random.RandomState(seed % (2**32 - 1))
        h, w = images.shape[1:3]
        left = rng.randint(0, w - width + 1) if w > width else 0
        top = rng.randint(0, h - height + 1) if h > height else 0
        return (_crop(images, left, top, width, height),)


class NormalizeImages(Node):
    schema = _image_node(
        "NormalizeImages",
        "Normalize Image Colors",
        "image/color",
        "Normalize images using mean and standard deviation.",
        Float("mean", 0.5, min=0.0, max=1.0, tooltip="Mean value for normalization."),
        Float("std", 0.5, min=0.001, max=1.0, tooltip="Standard deviation for normalization."),
    )

    @classmethod
    def execute(cls, images: torch.Tensor, mean: float, std: float) -> tuple[torch.Tensor]:
        return ((images - mean) / std,)


class AdjustBrightness(Node):
    schema = _image_node(
        "AdjustBrightness",
        "Adjust Brightness",
        "image/adjustments",
        "Adjust the brightness.",
        Float("factor", 1.0, min=0.0, max=2.0, tooltip="1.0 = no change."),
    )

    @classmethod
    def execute(cls, images: torch.Tensor, factor: float) -> tuple[torch.Tensor]:
        return ((images * factor).clamp(0.0, 1.0),)


class AdjustContrast(Node):
    schema = _image_node(
        "AdjustContrast",
        "Adjust Contrast",
        "image/adjustments",
        "Adjust the contrast.",
        Float("factor", 1.0, min=0.0, max=2.0, tooltip="1.0 = no change."),
    )

    @classmethod
    def execute(cls, images: torch.Tensor, factor: float) -> tuple[torch.Tensor]:
        return (((images - 0.5) * factor + 0.5).clamp(0.0, 1.0),)


def _permutation(n: int, seed: int) -> list[int]:
    return [int(i) for i in np.random.RandomState(seed % (2**32 - 1)).permutation(n)]


class ShuffleDataset(Node):
    schema = Schema(
        "ShuffleDataset", display_name="Shuffle Images List", category="image/batch", experimental=True,
        description="Randomly shuffle the order of images in a list.", is_input_list=True,
        inputs=(Typed("images", "IMAGE", tooltip="List of images."), Int("seed", 0, min=0, max=SEED_MAX)),
        outputs=(Output("IMAGE", "images", is_list=True),),
    )  # fmt: skip

    @classmethod
    def execute(cls, images: list[torch.Tensor], seed: list[int]) -> NodeOutput:
        return NodeOutput.of([images[i] for i in _permutation(len(images), seed[0])])


class ShuffleImageTextDataset(Node):
    schema = Schema(
        "ShuffleImageTextDataset", display_name="Shuffle Pairs of Image-Text", category="image/batch",
        experimental=True, description="Randomly shuffle image-text pairs together.", is_input_list=True,
        inputs=(Typed("images", "IMAGE"), String("texts", force_input=True), Int("seed", 0, min=0, max=SEED_MAX)),
        outputs=(Output("IMAGE", "images", is_list=True), Output("STRING", "texts", is_list=True)),
    )  # fmt: skip

    @classmethod
    def execute(cls, images: list[torch.Tensor], texts: list[str], seed: list[int]) -> NodeOutput:
        if len(texts) != len(images):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        order = _permutation(len(images), seed[0])
        return NodeOutput.of([images[i] for i in order], [texts[i] for i in order])


# --- text transforms ------------------------------------------------------------------------------


def _text_node(node_id: str, display: str, description: str, *extra: Any) -> Schema:
    return Schema(
        node_id, display_name=display, category="text", description=description, experimental=True,
        inputs=(String("texts", tooltip="Text to process."), *extra),
        outputs=(Output("STRING", "texts", tooltip="Processed texts"),),
    )  # fmt: skip


class TextToLowercase(Node):
    schema = _text_node("TextToLowercase", "Convert Text to Lowercase", "Convert text to lowercase.")

    @classmethod
    def execute(cls, texts: str) -> tuple[str]:
        return (texts.lower(),)


class TextToUppercase(Node):
    schema = _text_node("TextToUppercase", "Convert Text to Uppercase", "Convert text to uppercase.")

    @classmethod
    def execute(cls, texts: str) -> tuple[str]:
        return (texts.upper(),)


class TruncateText(Node):
    schema = _text_node(
        "TruncateText",
        "Truncate Text",
        "Truncate text to a maximum length.",
        Int("max_length", 77, min=1, max=10000, tooltip="Maximum text length."),
    )

    @classmethod
    def execute(cls, texts: str, max_length: int) -> tuple[str]:
        return (texts[:max_length],)


class AddTextPrefix(Node):
    schema = _text_node(
        "AddTextPrefix",
        "Add Text Prefix",
        "Add a prefix (e.g. a trigger word) to all texts.",
        String("prefix", tooltip="Prefix to add."),
    )

    @classmethod
    def execute(cls, texts: str, prefix: str) -> tuple[str]:
        return (prefix + texts,)


class AddTextSuffix(Node):
    schema = _text_node(
        "AddTextSuffix",
        "Add Text Suffix",
        "Add a suffix to all texts.",
        String("suffix", tooltip="Suffix to add."),
    )

    @classmethod
    def execute(cls, texts: str, suffix: str) -> tuple[str]:
        return (texts + suffix,)


class ReplaceText(Node):
    schema = _text_node(
        "ReplaceText",
        "Replace Text",
        "Replace text in all texts.",
        String("find", tooltip="Text to find."),
        String("replace", tooltip="Text to replace with."),
    )

    @classmethod
    def execute(cls, texts: str, find: str, replace: str) -> tuple[str]:
        return (texts.replace(find, replace),)


class StripWhitespace(Node):
    schema = _text_node("StripWhitespace", "Strip Whitespace", "Strip leading and trailing whitespace.")

    @classmethod
    def execute(cls, texts: str) -> tuple[str]:
        return (texts.strip(),)


NODES = (
    ResizeImagesByShorterEdge, ResizeImagesByLongerEdge, CenterCropImages, RandomCropImages, NormalizeImages,
    AdjustBrightness, AdjustContrast, ShuffleDataset, ShuffleImageTextDataset, TextToLowercase, TextToUppercase,
    TruncateText, AddTextPrefix, AddTextSuffix, ReplaceText, StripWhitespace,
)  # fmt: skip
