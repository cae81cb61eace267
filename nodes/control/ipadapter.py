"""XLabs' FLUX IP-Adapter nodes with the names and inputs of their pack (x-flux-comfyui), so shared
workflows run: LoadFluxIPAdapter (file, CLIP vision file, provider) and ApplyFluxIPAdapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from executor.schema import Combo, Float, Node, Output, Schema, Typed
from models.control.ipadapter import IPAttention, XLabsIPAdapter, load_xlabs_ipadapter
from models.patches import ModelHandle
from models.vision.load import load_vision_tower
from models.vision.towers import CLIP_VISION
from nodes.control.vision import ClipVisionHandle, encode_image
from nodes.loaders.model_files import files_in, model_paths
from nodes.runtime.device import compute_device, use_models
from nodes.runtime.services import Ctx
from nodes.runtime.types import MODEL

IP_ADAPTER_FLUX = Output("IP_ADAPTER_FLUX", "ipadapterFlux")


@dataclass(frozen=True, eq=False)
class FluxIPAdapterHandle:
    """IP_ADAPTER_FLUX: the adapter and the CLIP ViT-L/14 vision tower it reads images with."""

    adapter: XLabsIPAdapter
    clip_vision: ClipVisionHandle


class LoadFluxIPAdapter(Node):
    schema = Schema(
        "LoadFluxIPAdapter",
        display_name="Load Flux IPAdatpter",
        category="XLabsNodes",
        inputs=(
            Combo("ipadatper", files_in("xlabs_ipadapters")),
            Combo("clip_vision", files_in("clip_vision")),
            Combo("provider", ("CPU", "GPU")),
        ),
        outputs=(IP_ADAPTER_FLUX,),
        description="Loads XLabs' flux-ip-adapter and the CLIP vision tower its images go through. provider is "
        "accepted for compatibility: the memory manager places both.",
    )

    @classmethod
    def execute(cls, ctx: Ctx, ipadatper: str, clip_vision: str, provider: str) -> tuple[FluxIPAdapterHandle]:
        paths = model_paths(ctx)
        adapter = load_xlabs_ipadapter(paths.resolve("xlabs_ipadapters", ipadatper))
        vision_path = paths.resolve("clip_vision", clip_vision)
        vision = load_vision_tower(vision_path)
        if vision.params.family != CLIP_VISION:
            raise ValueError(
                f"{clip_vision} is a {vision.params.family} tower; the XLabs IP-Adapter reads CLIP "
                "ViT-L/14 image embeddings (clip_vision_l)"
            )
        return (FluxIPAdapterHandle(adapter, ClipVisionHandle(vision, vision_path)),)


class ApplyFluxIPAdapter(Node):
    schema = Schema(
        "ApplyFluxIPAdapter",
        display_name="Apply Flux IPAdapter",
        category="XLabsNodes",
        inputs=(
            Typed("model", "MODEL"),
            Typed("ip_adapter_flux", "IP_ADAPTER_FLUX"),
            Typed("image", "IMAGE"),
            Float("ip_scale", 0.93, min=0.0, max=1.0, step=0.001),
        ),
        outputs=(MODEL,),
    )

    @classmethod
    def execute(
        cls,
        ctx: Ctx,
        model: ModelHandle,
        ip_adapter_flux: FluxIPAdapterHandle,
        image: torch.Tensor,
        ip_scale: float,
    ) -> tuple[ModelHandle]:
        embeds = encode_image(ctx, ip_adapter_flux.clip_vision, image, crop=True).image_embeds
        adapter = ip_adapter_flux.adapter
        with use_models(ctx, adapter):
            tokens = adapter.image_tokens(embeds.to(compute_device(ctx, adapter))).float().cpu()
        attention: tuple[Any, ...] = (
            *model.options.extras.get("double_attention", ()),
            IPAttention(adapter, tokens, ip_scale),
        )
        return (model.with_options(extras=dict(model.options.extras, double_attention=attention)),)


NODES = (LoadFluxIPAdapter, ApplyFluxIPAdapter)
