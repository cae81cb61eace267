"""ComfyUI's folder loaders: a folder of the input directory as a list of images, or of image-text
pairs (captions from `.txt` files beside the images; kohya `N_name` subfolders repeat their images N times).

Lists travel as ComfyUI output lists: one IMAGE [1, H, W, C] / STRING per element.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from executor.schema import Combo, Node, NodeOutput, Output, Schema
from nodes.runtime.file_paths import folder_for, safe_resolve
from nodes.runtime.services import Ctx

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def input_subfolders(services: Any) -> list[str]:
    """Every folder under the input directory, relative, '/'-separated (ComfyUI's get_input_subfolders)."""
    root = folder_for(services.settings, "input") if services is not None else None
    if root is None or not Path(root).is_dir():
        return []
    out = []
    for dirpath, dirnames, _files in os.walk(root):
        dirnames.sort()
        for d in dirnames:
            out.append(Path(dirpath, d).relative_to(root).as_posix())
    return sorted(out)


def load_image_file(path: Path) -> torch.Tensor:
    """[1, H, W, 3] float32 in 0..1 (16-bit "I" images scaled like ComfyUI)."""
    with Image.open(path) as opened:
        img: Image.Image = opened.point(lambda i: i * (1 / 255)) if opened.mode == "I" else opened
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy())[None]


def folder_images(folder: Path) -> tuple[list[Path], list[str]]:
    """Image files of `folder` (sorted) and, for subfolders named `N_name`, their images N times; captions
    from `.txt` files beside the images ("" when missing)."""
    files: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            files.append(entry)
        elif entry.is_dir():
            head = entry.name.split("_")[0]
            repeat = int(head) if head.isdigit() else 1
            inner = [p for p in sorted(entry.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            files.extend(inner * repeat)
    captions = []
    for f in files:
        txt = f.with_suffix(".txt")
        captions.append(txt.read_text(encoding="utf-8").strip() if txt.is_file() else "")
    return files, captions


def _folder(ctx: Ctx, folder: str) -> Path:
    path = safe_resolve(folder_for(ctx.services.settings, "input"), folder, what="folder")
    if not path.is_dir():
        raise FileNotFoundError(f"input folder {folder!r} does not exist")
    return path


class LoadImageDataSetFromFolder(Node):
    schema = Schema(
        "LoadImageDataSetFromFolder", display_name="Load Image (from Folder)", category="image",
        description="Load a dataset of images from a folder of the input directory as a list. PNG, JPG, JPEG, WEBP.",
        experimental=True, search_aliases=("load folder", "load dataset", "load images"),
        inputs=(Combo("folder", input_subfolders, tooltip="The folder to load images from."),),
        outputs=(Output("IMAGE", "images", is_list=True, tooltip="List of loaded images"),),
    )  # fmt: skip

    @classmethod
    def execute(cls, ctx: Ctx, folder: str) -> NodeOutput:
        root = _folder(ctx, folder)
        files = [p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise ValueError(f"no images in input folder {folder!r}")
        return NodeOutput.of([load_image_file(p) for p in files])


class LoadImageTextDataSetFromFolder(Node):
    schema = Schema(
        "LoadImageTextDataSetFromFolder", display_name="Load Image-Text (from Folder)", category="image",
        description="Load images and their .txt captions from a folder of the input directory; subfolders "
                    "named N_name (kohya) repeat their images N times.",
        experimental=True, search_aliases=("load folder", "load dataset", "load images"),
        inputs=(Combo("folder", input_subfolders, tooltip="The folder to load images and text captions from."),),
        outputs=(Output("IMAGE", "images", is_list=True, tooltip="List of loaded images"),
                 Output("STRING", "texts", is_list=True, tooltip="List of text captions")),
    )  # fmt: skip

    @classmethod
    def execute(cls, ctx: Ctx, folder: str) -> NodeOutput:
        files, captions = folder_images(_folder(ctx, folder))
        if not files:
            raise ValueError(f"no images in input folder {folder!r}")
        log.info("loaded %d images from %s", len(files), folder)
        return NodeOutput.of([load_image_file(p) for p in files], captions)


NODES = (LoadImageDataSetFromFolder, LoadImageTextDataSetFromFolder)
