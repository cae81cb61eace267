"""How ComfyUI calls its core nodes in V1 form: for each node id, the method name (`FUNCTION`), its
positional parameters in ComfyUI's order, their defaults, and the RETURN_TYPES used before the node is
registered. `core_nodes.v1_class` builds the classes from this table.
"""

from __future__ import annotations

from typing import Any

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
