"""Our built-in nodes in ComfyUI's V1 shape, for packs that call or subclass `nodes.<Class>`.

Each class has ComfyUI's `INPUT_TYPES`, `RETURN_TYPES`, `FUNCTION` and method signature (e.g.
`CLIPTextEncode().encode(clip, text)`) and runs our node of the same id through the registry, inside
the running node's context (or a detached one at import time). `SaveImage`/`PreviewImage` are written
out so subclasses can change `output_dir`, `type`, `prefix_append` and `compress_level` as in ComfyUI.
"""

from __future__ import annotations

import inspect
import logging
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from executor.schema import COMBO, Input, NodeContext, NodeOutput, Schema

from .host import HOST, settings
from .missing import MissingComfyFeature

log = logging.getLogger(__name__)

_CACHE: dict[str, Any] = {}

# node id -> (FUNCTION, positional parameter order, parameter defaults, fallback RETURN_TYPES)
SIGNATURES: dict[str, tuple[str, tuple[str, ...], dict[str, Any], tuple[str, ...]]] = {
    "LoadImage": ("load_image", ("image",), {}, ("IMAGE", "MASK")),
    "LoadImageMask": ("load_image", ("image", "channel"), {}, ("MASK",)),
    "ImageScale": ("upscale", ("image", "upscale_method", "width", "height", "crop"), {}, ("IMAGE",)),
    "ImageScaleBy": ("upscale", ("image", "upscale_method", "scale_by"), {}, ("IMAGE",)),
    "ImageInvert": ("invert", ("image",), {}, ("IMAGE",)),
    "ImageBatch": ("batch", ("image1", "image2"), {}, ("IMAGE",)),
    "ImageCrop": ("crop", ("image", "width", "height", "x", "y"), {}, ("IMAGE",)),
    "ImagePadForOutpaint": (
        "expand_image",
        ("image", "left", "top", "right", "bottom", "feathering"),
        {},
        ("IMAGE", "MASK"),
    ),
    "EmptyImage": (
        "generate",
        ("width", "height", "batch_size", "color"),
        {"batch_size": 1, "color": 0},
        ("IMAGE",),
    ),
    "EmptyLatentImage": ("generate", ("width", "height", "batch_size"), {"batch_size": 1}, ("LATENT",)),
    "EmptySD3LatentImage": ("generate", ("width", "height", "batch_size"), {"batch_size": 1}, ("LATENT",)),
    "LatentUpscale": ("upscale", ("samples", "upscale_method", "width", "height", "crop"), {}, ("LATENT",)),
    "LatentUpscaleBy": ("upscale", ("samples", "upscale_method", "scale_by"), {}, ("LATENT",)),
    "SetLatentNoiseMask": ("set_mask", ("samples", "mask"), {}, ("LATENT",)),
    "VAEEncode": ("encode", ("vae", "pixels"), {}, ("LATENT",)),
    "VAEDecode": ("decode", ("vae", "samples"), {}, ("IMAGE",)),
    "CLIPTextEncode": ("encode", ("clip", "text"), {}, ("CONDITIONING",)),
    "ConditioningCombine": ("combine", ("conditioning_1", "conditioning_2"), {}, ("CONDITIONING",)),
    "ConditioningZeroOut": ("zero_out", ("conditioning",), {}, ("CONDITIONING",)),
    "ConditioningSetTimestepRange": ("set_range", ("conditioning", "start", "end"), {}, ("CONDITIONING",)),
    "ConditioningSetArea": (
        "append",
        ("conditioning", "width", "height", "x", "y", "strength"),
        {},
        ("CONDITIONING",),
    ),
    "FluxGuidance": ("append", ("conditioning", "guidance"), {}, ("CONDITIONING",)),
    "InpaintModelConditioning": (
        "encode",
        ("positive", "negative", "pixels", "vae", "mask", "noise_mask"),
        {"noise_mask": True},
        ("CONDITIONING", "CONDITIONING", "LATENT"),
    ),
    "CheckpointLoaderSimple": ("load_checkpoint", ("ckpt_name",), {}, ("MODEL", "CLIP", "VAE")),
    "UNETLoader": ("load_unet", ("unet_name", "weight_dtype"), {"weight_dtype": "default"}, ("MODEL",)),
    "VAELoader": ("load_vae", ("vae_name",), {}, ("VAE",)),
    "DualCLIPLoader": (
        "load_clip",
        ("clip_name1", "clip_name2", "type", "device"),
        {"device": "default"},
        ("CLIP",),
    ),
    "CLIPLoader": (
        "load_clip",
        ("clip_name", "type", "device"),
        {"type": "flux", "device": "default"},
        ("CLIP",),
    ),
    "LoraLoader": (
        "load_lora",
        ("model", "clip", "lora_name", "strength_model", "strength_clip"),
        {},
        ("MODEL", "CLIP"),
    ),
    "LoraLoaderModelOnly": ("load_lora_model_only", ("model", "lora_name", "strength_model"), {}, ("MODEL",)),
    "KSampler": (
        "sample",
        (
            "model",
            "seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "positive",
            "negative",
            "latent_image",
            "denoise",
        ),
        {"denoise": 1.0},
        ("LATENT",),
    ),
    "KSamplerAdvanced": (
        "sample",
        (
            "model",
            "add_noise",
            "noise_seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "positive",
            "negative",
            "latent_image",
            "start_at_step",
            "end_at_step",
            "return_with_leftover_noise",
        ),
        {},
        ("LATENT",),
    ),
    "SolidMask": ("solid", ("value", "width", "height"), {}, ("MASK",)),
    "InvertMask": ("invert", ("mask",), {}, ("MASK",)),
    "MaskToImage": ("mask_to_image", ("mask",), {}, ("IMAGE",)),
    "ImageToMask": ("image_to_mask", ("image", "channel"), {}, ("MASK",)),
}


def registry() -> Any:
    """The app's registry (packs included), else our built-ins alone."""
    if HOST.registry is not None:
        return HOST.registry
    if "registry" not in _CACHE:
        from nodes.runtime.registry import build_registry

        _CACHE["registry"] = build_registry()
    return _CACHE["registry"]


def _services() -> Any:
    if HOST.services is not None:
        return HOST.services
    from nodes.runtime.services import NodeServices

    return NodeServices(settings=settings())


def context() -> Any:
    """The running node's context, or a detached one (no progress, never cancelled)."""
    from executor.adapters import current_context

    ctx = current_context()
    if ctx is not None:
        return ctx
    return NodeContext("compat", "", _services(), progress=lambda *a: None, should_stop=lambda: False)


def spec_of(item: Input, services: Any) -> tuple[Any, ...]:
    """One input in ComfyUI's V1 spec form: `(type, {options})` or `([choices], {options})`."""
    opts: dict[str, Any] = {}
    for attr, key in (
        ("default", "default"),
        ("min", "min"),
        ("max", "max"),
        ("step", "step"),
        ("round", "round"),
        ("tooltip", "tooltip"),
        ("dynamic_prompts", "dynamicPrompts"),
    ):
        value = getattr(item, attr)
        if value is not None:
            opts[key] = value
    for attr, key in (
        ("multiline", "multiline"),
        ("control_after_generate", "control_after_generate"),
        ("force_input", "forceInput"),
        ("lazy", "lazy"),
        ("raw_link", "rawLink"),
    ):
        if getattr(item, attr):
            opts[key] = True
    opts.update(item.extra)
    if item.type == COMBO:
        options = item.options(services) if callable(item.options) else item.options
        return (list(options or ()), opts) if opts else (list(options or ()),)
    return (item.type, opts) if opts else (item.type,)


def input_types(schema: Schema, services: Any = None) -> dict[str, Any]:
    services = services if services is not None else _services()
    spec: dict[str, Any] = {
        "required": {i.name: spec_of(i, services) for i in schema.inputs if not i.optional}
    }
    optional = {i.name: spec_of(i, services) for i in schema.inputs if i.optional}
    if optional:
        spec["optional"] = optional
    if schema.hidden:
        spec["hidden"] = {h.name: h.kind for h in schema.hidden}
    return spec


def run_node(node_id: str, values: Mapping[str, Any]) -> Any:
    """Run our node `node_id` on `values`; V1 result form (`tuple`, or `{"ui", "result"}`)."""
    node_type = registry().get(node_id)
    if node_type is None:
        from .host import pack_of_caller

        raise MissingComfyFeature(pack_of_caller(3), f"nodes.{node_id}")
    out: NodeOutput = node_type.invoke(context(), dict(values))
    if out.ui:
        return {"ui": dict(out.ui), "result": tuple(out.values)}
    return tuple(out.values)


def _method(node_id: str, params: tuple[str, ...], defaults: Mapping[str, Any]) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if len(args) > len(params):
            raise TypeError(f"{node_id}: {len(args)} positional arguments for {len(params)} inputs")
        values = {**{k: v for k, v in defaults.items()}, **dict(zip(params, args)), **kwargs}
        return run_node(node_id, values)

    if not all(p.isidentifier() for p in params):  # input names a Python signature cannot hold
        return method
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [
        inspect.Parameter(
            p, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults.get(p, inspect.Parameter.empty)
        )
        for p in params
    ]
    method.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return method


def v1_class(node_id: str) -> type:
    """ComfyUI's V1 class for our node `node_id` (cached; also made for nodes not registered yet)."""
    key = f"class:{node_id}"
    if key in _CACHE:
        return _CACHE[key]
    if node_id == "SaveImage":
        return SaveImage
    if node_id == "PreviewImage":
        return PreviewImage
    node_type = registry().get(node_id)
    schema: Schema | None = node_type.schema if node_type is not None else None
    if node_id in SIGNATURES:
        function, params, defaults, fallback = SIGNATURES[node_id]
    elif schema is not None:
        function, params, defaults, fallback = "execute", tuple(i.name for i in schema.inputs), {}, ()
    else:
        raise AttributeError(f"module 'nodes' has no attribute {node_id!r}")
    returns = tuple(o.type for o in schema.outputs) if schema is not None else fallback
    attrs: dict[str, Any] = {
        "RETURN_TYPES": returns,
        "RETURN_NAMES": tuple(o.label for o in schema.outputs) if schema is not None else returns,
        "FUNCTION": function,
        "CATEGORY": schema.category if schema is not None else "loaders",
        "OUTPUT_NODE": bool(schema and schema.is_output_node),
        "DESCRIPTION": schema.description if schema is not None else "",
        "__module__": "nodes",
        "__qualname__": node_id,
        function: _method(node_id, params, defaults),
    }

    def INPUT_TYPES(cls: type) -> dict[str, Any]:
        found = registry().get(node_id)
        if found is None:
            raise MissingComfyFeature(HOST.loading_pack or "unknown pack", f"nodes.{node_id}")
        return input_types(found.describe(_services()))

    attrs["INPUT_TYPES"] = classmethod(INPUT_TYPES)
    cls = type(node_id, (), attrs)
    _CACHE[key] = cls
    return cls


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


def common_ksampler(
    model: Any,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Any,
    negative: Any,
    latent: Any,
    denoise: float = 1.0,
    disable_noise: bool = False,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
) -> tuple[Any, ...]:
    """ComfyUI's helper: KSampler, or KSamplerAdvanced when steps are limited or noise is off."""
    if not disable_noise and start_step is None and last_step is None and not force_full_denoise:
        return run_node(
            "KSampler",
            {
                "model": model,
                "seed": seed,
                "steps": steps,
                "cfg": cfg,
                "sampler_name": sampler_name,
                "scheduler": scheduler,
                "positive": positive,
                "negative": negative,
                "latent_image": latent,
                "denoise": denoise,
            },
        )
    return run_node(
        "KSamplerAdvanced",
        {
            "model": model,
            "add_noise": "disable" if disable_noise else "enable",
            "noise_seed": seed,
            "steps": steps,
            "cfg": cfg,
            "sampler_name": sampler_name,
            "scheduler": scheduler,
            "positive": positive,
            "negative": negative,
            "latent_image": latent,
            "start_at_step": start_step or 0,
            "end_at_step": last_step if last_step is not None else 10000,
            "return_with_leftover_noise": "disable" if force_full_denoise else "enable",
        },
    )


def class_mappings() -> dict[str, type]:
    """ComfyUI's `nodes.NODE_CLASS_MAPPINGS`: every registered node as a V1-callable class."""
    mappings: dict[str, type] = {}
    for node_type in registry():
        origin = node_type.origin
        if node_type.source != "nodes" and origin is not None:
            mappings[node_type.node_id] = origin  # a pack's own class
        else:
            try:
                mappings[node_type.node_id] = v1_class(node_type.node_id)
            except Exception:  # one odd node never hides the others from packs
                log.exception("node %s has no ComfyUI V1 form for packs", node_type.node_id)
    return mappings


def display_name_mappings() -> dict[str, str]:
    return {t.node_id: t.schema.display_name for t in registry() if t.schema.display_name}
