"""Model loader nodes (ComfyUI's names, inputs, outputs and categories).

Files are chosen from the model folders (`ctx.services.model_paths`) and loaded lazily by
`models.formats`. Nodes keep no caches: the executor's output cache reuses a loaded model for as
long as the same file and options are asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from executor.schema import Combo, Input, Node, Output, Schema
from models import formats
from models.formats.detect import CLIP_L, T5XXL
from models.formats.fp8 import WEIGHT_DTYPES, module_compute_dtype
from models.patches import ClipHandle, ModelHandle, ModelOptions, VaeHandle
from nodes.runtime.model_paths import ModelPaths
from nodes.runtime.services import Ctx

if TYPE_CHECKING:
    from models.flux.model import Flux

log = logging.getLogger(__name__)

DUAL_CLIP_TYPES = (
    "sdxl",
    "sd3",
    "flux",
    "hunyuan_video",
    "hidream",
    "hunyuan_image",
    "hunyuan_video_15",
    "kandinsky5",
    "kandinsky5_image",
    "ltxv",
    "newbie",
    "ace",
)
CLIP_TYPES = (
    "stable_diffusion",
    "stable_cascade",
    "sd3",
    "stable_audio",
    "mochi",
    "ltxv",
    "pixart",
    "cosmos",
    "lumina2",
    "wan",
    "hidream",
    "chroma",
    "ace",
    "omnigen2",
    "qwen_image",
    "hunyuan_image",
    "flux2",
    "ovis",
    "longcat_image",
)
DEVICES = ("default", "cpu")


def model_paths(ctx: Ctx | None) -> ModelPaths:
    paths = ctx.services.model_paths if ctx is not None else None
    if paths is None:
        raise RuntimeError(
            "no model folders are configured (services.model_paths is missing); "
            "start Fluxloom with --models-dir"
        )
    return paths


def files_in(kind: str) -> Callable[[Any], Sequence[str]]:
    """COMBO options: the current files of a model folder kind ([] without services)."""

    def options(services: Any) -> Sequence[str]:
        paths = getattr(services, "model_paths", None)
        return paths.list_models(kind) if paths is not None else []

    return options


def _device_input() -> Input:
    return Combo("device", DEVICES, default="default", optional=True, extra={"advanced": True})


def model_handle(model: Flux, source: Path, weight_dtype: str = "default") -> ModelHandle:
    options = ModelOptions(
        source=source, weight_dtype=weight_dtype, compute_dtype=module_compute_dtype(model)
    )
    return ModelHandle(module=model, params=model.params, options=options)


def vae_handle(ae: nn.Module, source: Path) -> VaeHandle:
    return VaeHandle(module=ae, params=ae.params, source=source, compute_dtype=module_compute_dtype(ae))


def clip_handle(
    encoders: dict[str, Any],
    sources: Sequence[Path],
    tokenizer_folders: Sequence[Path],
    device: str = "default",
) -> ClipHandle:
    """A CLIP handle for the loaded encoders (kind -> LoadedTextEncoder) with their tokenizers.

    `tokenizer_folders` are searched for `clip_l/` + `t5xxl/` (or diffusers `tokenizer/` + `tokenizer_2/`).
    """
    from models.text.encode import TextEncoders
    from models.text.tokenizers import load_clip_tokenizer, load_t5_tokenizer

    clip = encoders.get(CLIP_L)
    t5 = encoders.get(T5XXL)
    folders = [Path(f) for f in tokenizer_folders]
    text = TextEncoders(
        clip=clip.module if clip else None,
        t5=t5.module if t5 else None,
        clip_tokenizer=load_clip_tokenizer([f / n for f in folders for n in ("tokenizer", "clip_l")])
        if clip
        else None,
        t5_tokenizer=load_t5_tokenizer([f / n for f in folders for n in ("tokenizer_2", "t5xxl")])
        if t5
        else None,
    )
    first = clip or t5
    if first is None:
        raise ValueError("no text encoder was loaded")
    return ClipHandle(
        encoders=text, sources=tuple(sources), compute_dtype=module_compute_dtype(first.module), device=device
    )


def _tokenizer_roots(ctx: Ctx, path: Path) -> list[Path]:
    """A diffusers pipeline folder first (its own tokenizers), then every tokenizers folder."""
    roots = [path] if path.is_dir() else []
    return roots + list(model_paths(ctx).folders_for("tokenizers"))


class UNETLoader(Node):
    schema = Schema(
        "UNETLoader",
        display_name="Load Diffusion Model",
        category="advanced/loaders",
        description="Loads a FLUX diffusion model (BFL, diffusers or fp8 file) from the diffusion_models folder.",
        inputs=(
            Combo("unet_name", files_in("diffusion_models")),
            Combo("weight_dtype", tuple(WEIGHT_DTYPES), default="default"),
        ),
        outputs=(Output("MODEL"),),
    )

    @classmethod
    def execute(cls, ctx: Ctx, unet_name: str, weight_dtype: str) -> tuple[ModelHandle]:
        path = model_paths(ctx).resolve("diffusion_models", unet_name)
        dtype = None if weight_dtype == "default" else weight_dtype
        return (model_handle(formats.load_flux_transformer(path, weight_dtype=dtype), path, weight_dtype),)


def _load_encoders(ctx: Ctx, names: Sequence[str]) -> tuple[dict[str, Any], list[Path]]:
    paths = [model_paths(ctx).resolve("text_encoders", name) for name in names]
    loaded: dict[str, Any] = {}
    for path in paths:
        encoder = formats.load_text_encoder(path)
        if encoder.kind in loaded:
            raise ValueError(
                f"two {encoder.kind} text encoders given ({', '.join(names)}); "
                "FLUX needs one CLIP-L and one T5-XXL"
            )
        loaded[encoder.kind] = encoder
    return loaded, paths


class DualCLIPLoader(Node):
    schema = Schema(
        "DualCLIPLoader",
        category="advanced/loaders",
        description="[Recipes]\n\nflux: clip-l, t5 (in either order)",
        inputs=(
            Combo("clip_name1", files_in("text_encoders")),
            Combo("clip_name2", files_in("text_encoders")),
            Combo("type", DUAL_CLIP_TYPES),
            _device_input(),
        ),
        outputs=(Output("CLIP"),),
    )

    @classmethod
    def execute(
        cls, ctx: Ctx, clip_name1: str, clip_name2: str, type: str, device: str = "default"
    ) -> tuple[ClipHandle]:
        if type != "flux":
            raise ValueError(
                f"DualCLIPLoader type {type!r} is not supported: Fluxloom runs FLUX, use type 'flux' "
                "with a CLIP-L and a T5-XXL file"
            )
        loaded, paths = _load_encoders(ctx, (clip_name1, clip_name2))
        if set(loaded) != {CLIP_L, T5XXL}:
            raise ValueError(
                f"type 'flux' needs a CLIP-L and a T5-XXL text encoder, got {sorted(loaded)} "
                f"from {clip_name1!r} and {clip_name2!r}"
            )
        return (clip_handle(loaded, paths, _tokenizer_roots(ctx, paths[0]), device),)


class CLIPLoader(Node):
    schema = Schema(
        "CLIPLoader",
        display_name="Load CLIP",
        category="advanced/loaders",
        description="Loads one text encoder (CLIP-L or T5-XXL); FLUX prompts need both (see DualCLIPLoader).",
        inputs=(Combo("clip_name", files_in("text_encoders")), Combo("type", CLIP_TYPES), _device_input()),
        outputs=(Output("CLIP"),),
    )

    @classmethod
    def execute(cls, ctx: Ctx, clip_name: str, type: str, device: str = "default") -> tuple[ClipHandle]:
        loaded, paths = _load_encoders(ctx, (clip_name,))
        log.info("CLIPLoader: %s holds %s (type %r)", clip_name, next(iter(loaded)), type)
        return (clip_handle(loaded, paths, _tokenizer_roots(ctx, paths[0]), device),)


class VAELoader(Node):
    schema = Schema(
        "VAELoader",
        display_name="Load VAE",
        category="loaders",
        inputs=(Combo("vae_name", files_in("vae")),),
        outputs=(Output("VAE"),),
    )

    @classmethod
    def execute(cls, ctx: Ctx, vae_name: str) -> tuple[VaeHandle]:
        path = model_paths(ctx).resolve("vae", vae_name)
        return (vae_handle(formats.load_autoencoder(path), path),)


class CheckpointLoaderSimple(Node):
    schema = Schema(
        "CheckpointLoaderSimple",
        display_name="Load Checkpoint",
        category="loaders",
        description="Loads an all-in-one checkpoint (or a diffusers FLUX folder): the diffusion model, its text "
        "encoders and its VAE.",
        inputs=(
            Combo(
                "ckpt_name", files_in("checkpoints"), tooltip="The name of the checkpoint (model) to load."
            ),
        ),
        outputs=(
            Output("MODEL", tooltip="The model used for denoising latents."),
            Output("CLIP", tooltip="The CLIP model used for encoding text prompts."),
            Output(
                "VAE", tooltip="The VAE model used for encoding and decoding images to and from latent space."
            ),
        ),
    )

    @classmethod
    def execute(cls, ctx: Ctx, ckpt_name: str) -> tuple[ModelHandle, ClipHandle | None, VaeHandle | None]:
        path = model_paths(ctx).resolve("checkpoints", ckpt_name)
        loaded = formats.load_checkpoint(path)
        clip = (
            clip_handle(dict(loaded.text_encoders), [path], _tokenizer_roots(ctx, path))
            if loaded.text_encoders
            else None
        )
        vae = vae_handle(loaded.vae, path) if loaded.vae is not None else None
        return model_handle(loaded.flux, path), clip, vae


NODES = (CheckpointLoaderSimple, UNETLoader, DualCLIPLoader, CLIPLoader, VAELoader)
