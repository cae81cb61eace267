"""ComfyUI's SaveImage and PreviewImage written out in V1 form, so pack subclasses can change
`output_dir`, `type`, `prefix_append` and `compress_level` as they do in ComfyUI.
"""

from __future__ import annotations

import secrets
import string
from pathlib import Path
from typing import Any

from .host import settings


def _random_suffix() -> str:
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))


class SaveImage:
    """ComfyUI's SaveImage: PNGs with the prompt and workflow embedded, in `self.output_dir`."""

    RETURN_TYPES: tuple[str, ...] = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."

    def __init__(self) -> None:
        from . import folder_paths

        self.output_dir = folder_paths.get_output_directory()
        self.type = "output"
        self.prefix_append = ""
        self.compress_level = 4

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI"}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save_images(
        self, images: Any, filename_prefix: str = "ComfyUI", prompt: Any = None, extra_pnginfo: Any = None
    ) -> dict[str, Any]:
        from nodes.image.files import save_images

        if getattr(settings(), "disable_metadata", False):
            prompt, extra_pnginfo = None, None
        results = save_images(
            images,
            Path(self.output_dir),
            filename_prefix + self.prefix_append,
            folder_type=self.type,
            compress_level=self.compress_level,
            prompt=prompt,
            extra_pnginfo=extra_pnginfo,
        )
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    """ComfyUI's PreviewImage: like SaveImage, into the temp folder with a random suffix."""

    def __init__(self) -> None:
        from . import folder_paths

        self.output_dir = folder_paths.get_temp_directory()
        self.type = "temp"
        self.prefix_append = "_temp_" + _random_suffix()
        self.compress_level = 1

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"images": ("IMAGE",)},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }
