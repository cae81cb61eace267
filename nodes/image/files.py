"""Image files in and out: LoadImage, LoadImageMask, SaveImage, PreviewImage (ComfyUI's nodes of those names).

Names from prompts resolve through `nodes.runtime.file_paths` (never outside their folder). Saved PNGs carry
the prompt and every `extra_pnginfo` entry (the workflow) as JSON tEXt chunks, like ComfyUI's.

Hooks (`fingerprint`, `validate_inputs`) take an optional `services` keyword: LoadImage needs the
input folder to hash or find the file. Without it (an engine that does not pass services) the
fingerprint is NaN, so the node re-runs rather than serve a stale image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from executor.schema import PROMPT_HIDDEN, Combo, Node, NodeOutput, Schema, String, Typed
from nodes.image.tensors import channel_mask, empty_mask, mask_from_alpha, pil_to_image, tensor_to_pil
from nodes.runtime.file_paths import (
    SaveTarget,
    UnsafePathError,
    folder_for,
    list_input_images,
    resolve_annotated,
    safe_resolve,
    save_folder,
    save_target,
    split_annotation,
)
from nodes.runtime.services import Ctx
from nodes.runtime.types import IMAGE, MASK
from settings import Settings

log = logging.getLogger(__name__)

# Multi-frame formats whose extra frames are not animation (MPO: stereo / depth views); ComfyUI keeps frame 0.
SINGLE_FRAME_FORMATS = frozenset({"MPO"})
SAVE_COMPRESS_LEVEL = 4
PREVIEW_COMPRESS_LEVEL = 1
MASK_CHANNELS = ("alpha", "red", "green", "blue")


def _input_images(services: Any) -> list[str]:
    return list_input_images(services.settings.input_dir) if services is not None else []


def open_image(name: str, settings: Any) -> tuple[Path, Image.Image]:
    """Resolve an annotated image name and open it with Pillow; errors name the input and the file."""
    path = resolve_annotated(name, settings)
    if not path.is_file():
        raise FileNotFoundError(f"image {name!r} not found in its folder")
    try:
        return path, Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"image {name!r} is not a readable image: {_why(exc, path, name)}") from exc


def _why(exc: Exception, path: Path, name: str) -> str:
    """An error's text with the file's absolute path replaced by its name (messages reach the browser)."""
    return str(exc).replace(str(path), name)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def image_fingerprint(image: str, services: Any = None) -> str | float:
    """sha256 of the named file: a changed file re-runs the node. NaN (always re-run) when it cannot be read."""
    if services is None:
        return float("nan")
    try:
        return file_sha256(resolve_annotated(image, services.settings))
    except (OSError, ValueError):
        return float("nan")


def validate_image_name(image: str, services: Any = None) -> bool | str:
    """True, or why the image name is unusable (unsafe, or no such file when the folders are known)."""
    if not isinstance(image, str):
        return f"Invalid image file: {image!r} is not a file name"
    relative, kind = split_annotation(image)
    # Folders unknown (no services): check only the name's shape; the file's existence is checked on run.
    root = folder_for(services.settings, kind) if services is not None else Path("/unknown-folder")
    try:
        path = safe_resolve(root, relative, what=f"image name {image!r}")
    except UnsafePathError as exc:
        return f"Invalid image file: {exc}"
    if services is not None and not path.is_file():
        return f"Invalid image file: {image} (no such file: {path})"
    return True


def load_frames(pil: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [N, H, W, 3] and MASK [N, h, w] from every frame of the size of the first (ComfyUI's rules).

    EXIF orientation is applied. Without alpha in any frame the mask is zeros [N, 64, 64]; frames
    without alpha among frames with it get a zero mask of the image size.
    """
    images: list[torch.Tensor] = []
    masks: list[torch.Tensor | None] = []
    size = None
    for frame in ImageSequence.Iterator(pil):
        frame = ImageOps.exif_transpose(frame)
        if size is None:
            size = frame.size
        elif frame.size != size:
            continue  # ComfyUI drops frames whose size differs from the first
        images.append(pil_to_image(frame))
        masks.append(mask_from_alpha(frame))
        if pil.format in SINGLE_FRAME_FORMATS:
            break
    if not images:
        raise ValueError("the image file has no frames")
    if all(m is None for m in masks):
        mask = torch.cat([empty_mask() for _ in masks])
    else:
        height, width = images[0].shape[1:3]
        mask = torch.cat([m if m is not None else torch.zeros((1, height, width)) for m in masks])
    return torch.cat(images), mask


def _settings(ctx: Ctx) -> Settings:
    return ctx.services.settings


def _embedded(ctx: Ctx, prompt: Any, extra_pnginfo: Any) -> tuple[Any, Any]:
    """What a saved PNG carries: the prompt and workflow, unless --disable-metadata (ComfyUI's rule)."""
    if _settings(ctx).disable_metadata:
        return None, None
    return prompt, extra_pnginfo


class LoadImage(Node):
    schema = Schema(
        "LoadImage",
        display_name="Load Image",
        category="image",
        outputs=(IMAGE, MASK),
        inputs=(Combo("image", options=_input_images, extra={"image_upload": True}),),
    )

    @classmethod
    def execute(cls, ctx: Ctx, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        path, pil = open_image(image, _settings(ctx))
        with pil:
            try:
                return load_frames(pil)
            except (OSError, ValueError) as exc:
                raise ValueError(f"image {image!r} could not be decoded: {_why(exc, path, image)}") from exc

    @classmethod
    def fingerprint(cls, image: str, services: Any = None) -> str | float:
        return image_fingerprint(image, services)

    @classmethod
    def validate_inputs(cls, image: str, services: Any = None) -> bool | str:
        return validate_image_name(image, services)


class LoadImageMask(Node):
    schema = Schema(
        "LoadImageMask",
        display_name="Load Image (as Mask)",
        category="mask",
        outputs=(MASK,),
        inputs=(
            Combo("image", options=_input_images, extra={"image_upload": True}),
            Combo("channel", MASK_CHANNELS),
        ),
    )

    @classmethod
    def execute(cls, ctx: Ctx, image: str, channel: str) -> tuple[torch.Tensor]:
        path, pil = open_image(image, _settings(ctx))
        with pil:
            try:
                return (channel_mask(ImageOps.exif_transpose(pil), channel),)
            except (OSError, ValueError) as exc:
                raise ValueError(f"image {image!r} could not be decoded: {_why(exc, path, image)}") from exc

    @classmethod
    def fingerprint(cls, image: str, services: Any = None) -> str | float:
        return image_fingerprint(image, services)

    @classmethod
    def validate_inputs(cls, image: str, services: Any = None) -> bool | str:
        return validate_image_name(image, services)


def png_metadata(prompt: Any, extra_pnginfo: Mapping[str, Any] | None) -> PngInfo:
    """tEXt chunks: "prompt" and each extra_pnginfo key (e.g. "workflow"), each value as JSON."""
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(str(key), json.dumps(value))
    return info


def _write_exclusive(
    target: SaveTarget, counter: int, batch_number: int, pil: Image.Image, info: PngInfo, compress_level: int
) -> tuple[str, int]:
    """Write a PNG under the first free counter >= `counter`; never replaces an existing file."""
    while True:
        filename = target.filename(counter, batch_number)
        try:
            with open(target.folder / filename, "xb") as handle:
                pil.save(handle, format="PNG", pnginfo=info, compress_level=compress_level)
            return filename, counter
        except FileExistsError:
            counter += 1


def save_images(
    images: torch.Tensor,
    root: Path,
    filename_prefix: str,
    *,
    folder_type: str,
    compress_level: int,
    prompt: Any = None,
    extra_pnginfo: Mapping[str, Any] | None = None,
) -> list[dict[str, str]]:
    """Save each image of a batch [B, H, W, C] as PNG under `root`; returns ComfyUI's ui "images" entries."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be an IMAGE batch [B, H, W, C], got {shape}")
    target = save_target(root, filename_prefix, width=images.shape[2], height=images.shape[1])
    info = png_metadata(prompt, extra_pnginfo)
    results = []
    counter = target.counter
    for batch_number, image in enumerate(images):
        filename, counter = _write_exclusive(
            target, counter, batch_number, tensor_to_pil(image), info, compress_level
        )
        counter += 1
        results.append({"filename": filename, "subfolder": target.subfolder, "type": folder_type})
    log.debug("saved %d image(s) to %s", len(results), target.folder)
    return results


class SaveImage(Node):
    schema = Schema(
        "SaveImage",
        display_name="Save Image",
        category="image",
        outputs=(),
        is_output_node=True,
        inputs=(
            Typed("images", "IMAGE", tooltip="The images to save."),
            String(
                "filename_prefix",
                "ComfyUI",
                tooltip=(
                    "The prefix for the file to save. This may include formatting information such as "
                    "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."
                ),
            ),
        ),
        hidden=PROMPT_HIDDEN,
        description="Saves the input images to your ComfyUI output directory.",
    )

    @classmethod
    def execute(
        cls,
        ctx: Ctx,
        images: torch.Tensor,
        filename_prefix: str = "ComfyUI",
        prompt: Any = None,
        extra_pnginfo: Any = None,
    ) -> NodeOutput:
        root = save_folder(_settings(ctx), "output")
        prompt, extra_pnginfo = _embedded(ctx, prompt, extra_pnginfo)
        results = save_images(
            images,
            root,
            filename_prefix,
            folder_type="output",
            compress_level=SAVE_COMPRESS_LEVEL,
            prompt=prompt,
            extra_pnginfo=extra_pnginfo,
        )
        return NodeOutput.of(ui={"images": results})


def preview_prefix(prefix: str = "ComfyUI") -> str:
    """ComfyUI's temp naming: `{prefix}_temp_` plus five random lowercase letters."""
    return prefix + "_temp_" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))


class PreviewImage(Node):
    schema = Schema(
        "PreviewImage",
        display_name="Preview Image",
        category="image",
        outputs=(),
        is_output_node=True,
        inputs=(Typed("images", "IMAGE"),),
        hidden=PROMPT_HIDDEN,
    )

    @classmethod
    def execute(
        cls, ctx: Ctx, images: torch.Tensor, prompt: Any = None, extra_pnginfo: Any = None
    ) -> NodeOutput:
        root = save_folder(_settings(ctx), "temp")
        prompt, extra_pnginfo = _embedded(ctx, prompt, extra_pnginfo)
        results = save_images(
            images,
            root,
            preview_prefix(),
            folder_type="temp",
            compress_level=PREVIEW_COMPRESS_LEVEL,
            prompt=prompt,
            extra_pnginfo=extra_pnginfo,
        )
        return NodeOutput.of(ui={"images": results})


NODES = (LoadImage, LoadImageMask, SaveImage, PreviewImage)
