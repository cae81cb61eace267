"""ComfyUI's dataset nodes: image / image-text folders (kohya `N_name` repeats), list transforms,
resolution buckets, encoding a training dataset and saving / loading it as safetensors shards.

Lists travel as ComfyUI output lists: one IMAGE [1, H, W, C] / STRING / LATENT / CONDITIONING per
element. Dataset caches live under `<output>/datasets/<folder_name>` as `shard_NNNN.safetensors`
plus `metadata.json` (ComfyUI writes pickles there; we never do).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from executor.schema import SEED_MAX, Combo, Float, Int, Node, NodeOutput, Output, Schema, String, Typed
from models.training.data import is_dataset_folder, load_shards, save_shards
from nodes.conditioning.flux import encode_text
from nodes.latent import vae_ops
from nodes.runtime.file_paths import folder_for, safe_resolve
from nodes.runtime.services import Ctx

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
TRAINING = "model/training"


# --- folders --------------------------------------------------------------------------------------


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


def datasets_root(settings: Any) -> Path:
    return folder_for(settings, "output") / "datasets"


def dataset_folders(services: Any) -> list[str]:
    root = datasets_root(services.settings) if services is not None else None
    if root is None or not root.is_dir():
        return []
    found = []
    for dirpath, dirnames, _files in os.walk(root):
        if Path(dirpath) != root and is_dataset_folder(Path(dirpath)):
            found.append(Path(dirpath).relative_to(root).as_posix())
            dirnames[:] = []
    return sorted(found)


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


# --- image transforms (one image per call, as ComfyUI's per-item dataset nodes) ----------------------


def _to_pil(image: torch.Tensor) -> Image.Image:
    arr = (image[0] if image.ndim == 4 else image).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(arr)


def _from_pil(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]


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
        img = _to_pil(images)
        w, h = img.size
        size = (
            (shorter_edge, int(h * shorter_edge / w)) if w < h else (int(w * shorter_edge / h), shorter_edge)
        )
        return (_from_pil(img.resize(size, Image.Resampling.LANCZOS)),)


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
        out = []
        for image in images:
            img = _to_pil(image)
            w, h = img.size
            size = (
                (longer_edge, int(h * longer_edge / w)) if w > h else (int(w * longer_edge / h), longer_edge)
            )
            out.append(_from_pil(img.resize(size, Image.Resampling.LANCZOS)))
        return (torch.cat(out),)


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


# --- training datasets ------------------------------------------------------------------------------


class ResolutionBucket(Node):
    schema = Schema(
        "ResolutionBucket", display_name="Resolution Bucket", category=TRAINING, experimental=True,
        description="Group latents and conditionings into buckets of equal resolution.", is_input_list=True,
        inputs=(Typed("latents", "LATENT", tooltip="List of latent dicts to bucket by resolution."),
                Typed("conditioning", "CONDITIONING", tooltip="List of conditioning lists (same length).")),
        outputs=(Output("LATENT", "latents", is_list=True, tooltip="One batched latent per resolution bucket."),
                 Output("CONDITIONING", "conditioning", is_list=True, tooltip="One condition list per bucket.")),
    )  # fmt: skip

    @classmethod
    def execute(cls, latents: list[dict[str, Any]], conditioning: list[list[Any]]) -> NodeOutput:
        if len(latents) != len(conditioning):
            raise ValueError(f"{len(latents)} latents but {len(conditioning)} conditionings")
        buckets: dict[tuple[int, int], tuple[list[torch.Tensor], list[Any], list[torch.Tensor]]] = {}
        for latent, cond in zip(latents, conditioning):
            samples = latent["samples"]
            masks = latent.get("loss_mask")
            for i in range(samples.shape[0]):
                key = (int(samples.shape[-2]), int(samples.shape[-1]))
                lat, conds, msk = buckets.setdefault(key, ([], [], []))
                lat.append(samples[i])
                conds.append(cond[i] if len(cond) == samples.shape[0] else cond[0])
                if masks is not None:
                    msk.append(masks[i])
        out_latents, out_conds = [], []
        for (h, w), (lat, conds, msk) in buckets.items():
            value: dict[str, Any] = {"samples": torch.stack(lat)}
            if msk and len(msk) == len(lat):
                value["loss_mask"] = torch.stack(msk)
            out_latents.append(value)
            out_conds.append(conds)
            log.info("resolution bucket %dx%d: %d samples", h, w, len(lat))
        return NodeOutput.of(out_latents, out_conds)


class MakeTrainingDataset(Node):
    schema = Schema(
        "MakeTrainingDataset", display_name="Make Training Dataset", category=TRAINING, experimental=True,
        description="Encode images with the VAE and texts with CLIP into latents and conditionings. Optional "
                    "masks (1 = train on this pixel) become loss masks.", is_input_list=True,
        inputs=(Typed("images", "IMAGE", tooltip="List of images to encode."),
                Typed("vae", "VAE", tooltip="VAE model for encoding images to latents."),
                Typed("clip", "CLIP", tooltip="CLIP model for encoding text to conditioning."),
                String("texts", optional=True, force_input=True,
                       tooltip="Captions: one per image, one for all, or none (empty captions)."),
                Typed("masks", "MASK", optional=True, tooltip="Loss masks, one per image (1 = train here).")),
        outputs=(Output("LATENT", "latents", is_list=True, tooltip="List of latent dicts"),
                 Output("CONDITIONING", "conditioning", is_list=True, tooltip="List of conditioning lists")),
    )  # fmt: skip

    @classmethod
    def execute(
        cls, ctx: Ctx, images: list[torch.Tensor], vae: list[Any], clip: list[Any],
        texts: list[str] | None = None, masks: list[torch.Tensor] | None = None,
    ) -> NodeOutput:  # fmt: skip
        n = len(images)
        captions = list(texts or [""])
        if len(captions) == 1 and n > 1:
            captions = captions * n
        if len(captions) != n:
            raise ValueError(f"{len(captions)} texts for {n} images: give one per image, one, or none")
        if masks is not None and len(masks) not in (1, n):
            raise ValueError(f"{len(masks)} masks for {n} images")
        latents = []
        for i, image in enumerate(images):
            samples = vae_ops.encode(ctx, vae[0], image[..., :3])
            value: dict[str, Any] = {"samples": samples}
            if masks is not None:
                m = masks[i if len(masks) == n else 0]
                m = m[None] if m.ndim == 2 else m
                m = torch.nn.functional.interpolate(m[:, None].float(), size=samples.shape[-2:], mode="area")
                value["loss_mask"] = m.expand(samples.shape[0], 1, -1, -1).clone()
            latents.append(value)
        encoded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        conditioning = []
        for text in captions:
            if text not in encoded:
                encoded[text] = encode_text(ctx, clip[0], text, text)
            context, pooled = encoded[text]
            conditioning.append([[context, {"pooled_output": pooled}]])
        log.info("training dataset: %d latents, %d captions", len(latents), len(conditioning))
        return NodeOutput.of(latents, conditioning)


class SaveTrainingDataset(Node):
    schema = Schema(
        "SaveTrainingDataset", display_name="Save Training Dataset", category=TRAINING, experimental=True,
        description="Save encoded latents + conditionings as safetensors shards under output/datasets.",
        is_output_node=True, is_input_list=True,
        inputs=(Typed("latents", "LATENT", tooltip="List of latent dicts from MakeTrainingDataset."),
                Typed("conditioning", "CONDITIONING", tooltip="List of conditioning lists from MakeTrainingDataset."),
                String("folder_name", "training_dataset", tooltip="Folder inside the datasets directory."),
                Int("shard_size", 1000, min=1, max=100000, tooltip="Number of samples per shard file.")),
        outputs=(),
    )  # fmt: skip

    @classmethod
    def execute(
        cls, ctx: Ctx, latents: list[dict[str, Any]], conditioning: list[list[Any]], folder_name: list[str],
        shard_size: list[int],
    ) -> NodeOutput:  # fmt: skip
        if len(latents) != len(conditioning):
            raise ValueError(f"{len(latents)} latents but {len(conditioning)} conditionings")
        root = datasets_root(ctx.services.settings)
        root.mkdir(parents=True, exist_ok=True)
        folder = safe_resolve(root, folder_name[0], what="folder_name")
        if folder == root.resolve():
            raise ValueError("folder_name must name a subfolder of the datasets directory")
        records = [{"latent": lat, "conditioning": cond} for lat, cond in zip(latents, conditioning)]
        paths = save_shards(folder, records, shard_size[0])
        log.info("saved %d samples in %d shards to %s", len(records), len(paths), folder)
        return NodeOutput.of(ui={"text": [f"{len(records)} samples, {len(paths)} shards: {folder_name[0]}"]})


class LoadTrainingDataset(Node):
    schema = Schema(
        "LoadTrainingDataset", display_name="Load Training Dataset", category=TRAINING, experimental=True,
        description="Load latents + conditionings saved by Save Training Dataset.",
        inputs=(Combo("folder_name", dataset_folders, tooltip="Saved dataset to load, from the datasets directory."),),
        outputs=(Output("LATENT", "latents", is_list=True, tooltip="List of latent dicts"),
                 Output("CONDITIONING", "conditioning", is_list=True, tooltip="List of conditioning lists")),
    )  # fmt: skip

    @classmethod
    def execute(cls, ctx: Ctx, folder_name: str) -> NodeOutput:
        folder = safe_resolve(datasets_root(ctx.services.settings), folder_name, what="folder_name")
        records = load_shards(folder)
        return NodeOutput.of([r["latent"] for r in records], [r["conditioning"] for r in records])


NODES = (
    LoadImageDataSetFromFolder, LoadImageTextDataSetFromFolder, ResizeImagesByShorterEdge, ResizeImagesByLongerEdge,
    CenterCropImages, RandomCropImages, NormalizeImages, AdjustBrightness, AdjustContrast, ShuffleDataset,
    ShuffleImageTextDataset, TextToLowercase, TextToUppercase, TruncateText, AddTextPrefix, AddTextSuffix,
    ReplaceText, StripWhitespace, ResolutionBucket, MakeTrainingDataset, SaveTrainingDataset, LoadTrainingDataset,
)  # fmt: skip
