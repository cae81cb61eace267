"""ComfyUI's training-dataset nodes: resolution buckets, encoding images + captions into a training
dataset, and saving / loading it as safetensors shards.

Lists travel as ComfyUI output lists: one LATENT / CONDITIONING per element. Dataset caches live under
`<output>/datasets/<folder_name>` as `shard_NNNN.safetensors` plus `metadata.json` (ComfyUI writes pickles
there; we never do). The folder loaders and list transforms live in `folder_loaders` / `dataset_transforms`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from executor.schema import Combo, Int, Node, NodeOutput, Output, Schema, String, Typed
from models.training.data import is_dataset_folder, load_shards, save_shards
from nodes.conditioning.flux import encode_text
from nodes.latent import vae_ops
from nodes.runtime.file_paths import folder_for, safe_resolve, save_folder
from nodes.runtime.services import Ctx

log = logging.getLogger(__name__)

TRAINING = "model/training"


def _check_pairs(latents: list[Any], conditioning: list[Any]) -> None:
    if len(latents) != len(conditioning):
        raise ValueError(f"{len(latents)} latents but {len(conditioning)} conditionings")


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
        _check_pairs(latents, conditioning)
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
        _check_pairs(latents, conditioning)
        # output/datasets; on data-parallel ranks other than 0 their scratch folder
        root = save_folder(ctx.services.settings, "output") / "datasets"
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


NODES = (ResolutionBucket, MakeTrainingDataset, SaveTrainingDataset, LoadTrainingDataset)
