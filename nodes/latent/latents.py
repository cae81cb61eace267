"""LATENT nodes: empty latents, VAE encode/decode (plain and tiled), noise masks, latent resizing.

LATENT "samples" hold the VAE's un-scaled latent means ([B, 16, H/8, W/8]), as in ComfyUI; the
FLUX scale/shift is applied when the sampler takes a latent in and undone when it gives it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from executor.schema import MAX_RESOLUTION, Combo, Float, Int, Node, Output, Schema, Typed
from models.flux.latent_format import FLUX1_LATENT
from models.imaging.resize import CROP_METHODS, LATENT_UPSCALE_METHODS, resize
from nodes.latent import vae_ops
from nodes.runtime.services import Ctx
from nodes.runtime.types import IMAGE, LATENT

Latent = dict[str, Any]


def empty_latent(batch_size: int, height: int, width: int) -> Latent:
    """All-zero FLUX latent [batch, 16, height // 8, width // 8], float32 on the CPU."""
    return {"samples": torch.zeros(batch_size, FLUX1_LATENT.channels, height // 8, width // 8)}


class EmptyLatentImage(Node):
    schema = Schema(
        "EmptyLatentImage",
        category="latent",
        outputs=(Output("LATENT"),),
        description="Create a new batch of empty latent images to be denoised via sampling.",
        inputs=(
            Int(
                "width",
                1024,
                min=16,
                max=MAX_RESOLUTION,
                step=8,
                tooltip="The width of the latent images in pixels.",
            ),
            Int(
                "height",
                1024,
                min=16,
                max=MAX_RESOLUTION,
                step=8,
                tooltip="The height of the latent images in pixels.",
            ),
            Int("batch_size", 1, min=1, max=4096, tooltip="The number of latent images in the batch."),
        ),
    )

    @classmethod
    def execute(cls, width: int, height: int, batch_size: int = 1) -> tuple[Latent]:
        # ComfyUI makes 4 channels here and widens zeros to the model's 16 when sampling; FLUX is our
        # only latent format, so 16 from the start gives the same result.
        return (empty_latent(batch_size, height, width),)


class EmptySD3LatentImage(Node):
    schema = Schema(
        "EmptySD3LatentImage",
        category="latent/sd3",
        outputs=(LATENT,),
        inputs=(
            Int("width", 1024, min=16, max=MAX_RESOLUTION, step=16),
            Int("height", 1024, min=16, max=MAX_RESOLUTION, step=16),
            Int("batch_size", 1, min=1, max=4096),
        ),
    )

    @classmethod
    def execute(cls, width: int, height: int, batch_size: int = 1) -> tuple[Latent]:
        return (empty_latent(batch_size, height, width),)


class VAEEncode(Node):
    schema = Schema(
        "VAEEncode",
        category="latent",
        outputs=(LATENT,),
        inputs=(Typed("pixels", "IMAGE"), Typed("vae", "VAE")),
    )

    @classmethod
    def execute(cls, ctx: Ctx, pixels: torch.Tensor, vae: Any) -> tuple[Latent]:
        return ({"samples": vae_ops.encode(ctx, vae, pixels)},)


class VAEDecode(Node):
    schema = Schema(
        "VAEDecode",
        category="latent",
        outputs=(Output("IMAGE"),),
        description="Decodes latent images back into pixel space images.",
        inputs=(
            Typed("samples", "LATENT", tooltip="The latent to be decoded."),
            Typed("vae", "VAE", tooltip="The VAE model used for decoding the latent."),
        ),
    )

    @classmethod
    def execute(cls, ctx: Ctx, samples: Mapping[str, Any], vae: Any) -> tuple[torch.Tensor]:
        return (vae_ops.decode(ctx, vae, samples["samples"]),)


_TEMPORAL_TIP = "Only used for video VAEs: Amount of frames to {} at a time."


def _tiled_inputs(first: Any, tile_step: int) -> tuple:
    return (
        first,
        Typed("vae", "VAE"),
        Int("tile_size", 512, min=64, max=4096, step=tile_step),
        Int("overlap", 64, min=0, max=4096, step=32),
        Int("temporal_size", 64, min=8, max=4096, step=4, tooltip=_TEMPORAL_TIP.format("process")),
        Int(
            "temporal_overlap",
            8,
            min=4,
            max=4096,
            step=4,
            tooltip="Only used for video VAEs: Amount of frames to overlap.",
        ),
    )


class VAEEncodeTiled(Node):
    schema = Schema(
        "VAEEncodeTiled",
        category="_for_testing",
        outputs=(LATENT,),
        inputs=_tiled_inputs(Typed("pixels", "IMAGE"), 64),
    )

    @classmethod
    def execute(
        cls,
        ctx: Ctx,
        pixels: torch.Tensor,
        vae: Any,
        tile_size: int,
        overlap: int,
        temporal_size: int = 64,
        temporal_overlap: int = 8,
    ) -> tuple[Latent]:
        del temporal_size, temporal_overlap  # image VAE: no time axis
        return ({"samples": vae_ops.encode(ctx, vae, pixels, tile=tile_size, overlap=overlap)},)


class VAEDecodeTiled(Node):
    schema = Schema(
        "VAEDecodeTiled",
        category="_for_testing",
        outputs=(IMAGE,),
        inputs=_tiled_inputs(Typed("samples", "LATENT"), 32),
    )

    @classmethod
    def execute(
        cls,
        ctx: Ctx,
        samples: Mapping[str, Any],
        vae: Any,
        tile_size: int,
        overlap: int,
        temporal_size: int = 64,
        temporal_overlap: int = 8,
    ) -> tuple[torch.Tensor]:
        del temporal_size, temporal_overlap
        if tile_size < overlap * 4:  # ComfyUI's rule: overlap at most a quarter of the tile
            overlap = tile_size // 4
        return (vae_ops.decode(ctx, vae, samples["samples"], tile=tile_size, overlap=overlap),)


class SetLatentNoiseMask(Node):
    schema = Schema(
        "SetLatentNoiseMask",
        category="latent/inpaint",
        outputs=(LATENT,),
        inputs=(Typed("samples", "LATENT"), Typed("mask", "MASK")),
    )

    @classmethod
    def execute(cls, samples: Mapping[str, Any], mask: torch.Tensor) -> tuple[Latent]:
        out = dict(samples)
        out["noise_mask"] = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])
        return (out,)


class LatentUpscale(Node):
    schema = Schema(
        "LatentUpscale",
        category="latent",
        outputs=(LATENT,),
        inputs=(
            Typed("samples", "LATENT"),
            Combo("upscale_method", LATENT_UPSCALE_METHODS),
            Int("width", 512, min=0, max=MAX_RESOLUTION, step=8),
            Int("height", 512, min=0, max=MAX_RESOLUTION, step=8),
            Combo("crop", CROP_METHODS),
        ),
    )

    @classmethod
    def execute(
        cls, samples: Mapping[str, Any], upscale_method: str, width: int, height: int, crop: str
    ) -> tuple[Latent]:
        if width == 0 and height == 0:
            return (dict(samples),)
        x = samples["samples"]
        if width == 0:  # keep the aspect ratio from the given side
            height = max(64, height)
            width = max(64, round(x.shape[-1] * height / x.shape[-2]))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(x.shape[-2] * width / x.shape[-1]))
        else:
            width, height = max(64, width), max(64, height)
        out = dict(samples)
        out["samples"] = resize(x, width // 8, height // 8, upscale_method, crop)
        return (out,)


class LatentUpscaleBy(Node):
    schema = Schema(
        "LatentUpscaleBy",
        category="latent",
        outputs=(LATENT,),
        inputs=(
            Typed("samples", "LATENT"),
            Combo("upscale_method", LATENT_UPSCALE_METHODS),
            Float("scale_by", 1.5, min=0.01, max=8.0, step=0.01),
        ),
    )

    @classmethod
    def execute(cls, samples: Mapping[str, Any], upscale_method: str, scale_by: float) -> tuple[Latent]:
        x = samples["samples"]
        out = dict(samples)
        out["samples"] = resize(
            x, round(x.shape[-1] * scale_by), round(x.shape[-2] * scale_by), upscale_method
        )
        return (out,)


# BFL's preferred Kontext resolutions (width, height), ~1 megapixel, multiples of 16.
KONTEXT_RESOLUTIONS = (
    (672, 1568),
    (688, 1504),
    (720, 1456),
    (752, 1392),
    (800, 1328),
    (832, 1248),
    (880, 1184),
    (944, 1104),
    (1024, 1024),
    (1104, 944),
    (1184, 880),
    (1248, 832),
    (1328, 800),
    (1392, 752),
    (1456, 720),
    (1504, 688),
    (1568, 672),
)


def kontext_size(width: int, height: int) -> tuple[int, int]:
    """The preferred Kontext resolution whose aspect ratio is closest to width:height (first on ties)."""
    aspect = width / height
    return min(KONTEXT_RESOLUTIONS, key=lambda wh: abs(aspect - wh[0] / wh[1]))


class FluxKontextImageScale(Node):
    schema = Schema(
        "FluxKontextImageScale",
        category="advanced/conditioning/flux",
        outputs=(IMAGE,),
        description="This node resizes the image to one that is more optimal for flux kontext.",
        inputs=(Typed("image", "IMAGE"),),
    )

    @classmethod
    def execute(cls, image: torch.Tensor) -> tuple[torch.Tensor]:
        width, height = kontext_size(image.shape[2], image.shape[1])
        scaled = resize(image.movedim(-1, 1), width, height, "lanczos", "center")
        return (scaled.movedim(1, -1),)


NODES = (
    EmptyLatentImage,
    EmptySD3LatentImage,
    VAEEncode,
    VAEDecode,
    VAEEncodeTiled,
    VAEDecodeTiled,
    SetLatentNoiseMask,
    LatentUpscale,
    LatentUpscaleBy,
    FluxKontextImageScale,
)
