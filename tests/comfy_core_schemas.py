"""Schema-only stand-ins for ComfyUI core nodes, with ComfyUI's exact input lists and order.

Workflow-conversion tests register these for node types the registry does not have yet (loaders and
sampling nodes land separately); a real built-in node always wins. They cannot run: `run` raises.
"""

from __future__ import annotations

from typing import Any

from executor.registry import NodeRegistry

MAX_RES = 16384
SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True})
SAMPLERS = ["euler", "euler_ancestral", "heun", "dpmpp_2m", "res_multistep"]
SCHEDULERS = ["simple", "normal", "karras", "exponential", "beta"]
FILES = [
    "flux1-dev.safetensors",
    "flux1-schnell.safetensors",
    "clip_l.safetensors",
    "t5xxl_fp16.safetensors",
    "ae.safetensors",
]
WIDTH = ("INT", {"default": 1024, "min": 16, "max": MAX_RES, "step": 16})

# name -> (required, optional, return types, output node)
CORE: dict[str, tuple[dict[str, Any], dict[str, Any], tuple[str, ...], bool]] = {
    "CheckpointLoaderSimple": ({"ckpt_name": (FILES,)}, {}, ("MODEL", "CLIP", "VAE"), False),
    "UNETLoader": (
        {"unet_name": (FILES,), "weight_dtype": (["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],)},
        {},
        ("MODEL",),
        False,
    ),
    "DualCLIPLoader": (
        {"clip_name1": (FILES,), "clip_name2": (FILES,), "type": (["sdxl", "sd3", "flux", "hunyuan_video"],)},
        {"device": (["default", "cpu"], {"advanced": True})},
        ("CLIP",),
        False,
    ),
    "VAELoader": ({"vae_name": (FILES,)}, {}, ("VAE",), False),
    "CLIPTextEncode": (
        {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}), "clip": ("CLIP",)},
        {},
        ("CONDITIONING",),
        False,
    ),
    "CLIPTextEncodeFlux": (
        {
            "clip": ("CLIP",),
            "clip_l": ("STRING", {"multiline": True, "dynamicPrompts": True}),
            "t5xxl": ("STRING", {"multiline": True, "dynamicPrompts": True}),
            "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1}),
        },
        {},
        ("CONDITIONING",),
        False,
    ),
    "FluxGuidance": (
        {
            "conditioning": ("CONDITIONING",),
            "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1}),
        },
        {},
        ("CONDITIONING",),
        False,
    ),
    "ConditioningZeroOut": ({"conditioning": ("CONDITIONING",)}, {}, ("CONDITIONING",), False),
    "EmptySD3LatentImage": (
        {"width": WIDTH, "height": WIDTH, "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096})},
        {},
        ("LATENT",),
        False,
    ),
    "KSampler": (
        {
            "model": ("MODEL",),
            "seed": SEED,
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
            "sampler_name": (SAMPLERS,),
            "scheduler": (SCHEDULERS,),
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "latent_image": ("LATENT",),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
        },
        {},
        ("LATENT",),
        False,
    ),
    "VAEDecode": ({"samples": ("LATENT",), "vae": ("VAE",)}, {}, ("IMAGE",), False),
    "VAEEncode": ({"pixels": ("IMAGE",), "vae": ("VAE",)}, {}, ("LATENT",), False),
    "SaveImage": (
        {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
        {},
        (),
        True,
    ),
    "PreviewImage": ({"images": ("IMAGE",)}, {}, (), True),
    "LoadImage": ({"image": (["example.png"], {"image_upload": True})}, {}, ("IMAGE", "MASK"), False),
    "ImageInvert": ({"image": ("IMAGE",)}, {}, ("IMAGE",), False),
    "RandomNoise": ({"noise_seed": SEED}, {}, ("NOISE",), False),
    "KSamplerSelect": ({"sampler_name": (SAMPLERS,)}, {}, ("SAMPLER",), False),
    "BasicScheduler": (
        {
            "model": ("MODEL",),
            "scheduler": (SCHEDULERS,),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
        },
        {},
        ("SIGMAS",),
        False,
    ),
    "BasicGuider": ({"model": ("MODEL",), "conditioning": ("CONDITIONING",)}, {}, ("GUIDER",), False),
    "SamplerCustomAdvanced": (
        {
            "noise": ("NOISE",),
            "guider": ("GUIDER",),
            "sampler": ("SAMPLER",),
            "sigmas": ("SIGMAS",),
            "latent_image": ("LATENT",),
        },
        {},
        ("LATENT", "LATENT"),
        False,
    ),
    "ModelSamplingFlux": (
        {
            "model": ("MODEL",),
            "max_shift": ("FLOAT", {"default": 1.15, "min": 0.0, "max": 100.0, "step": 0.01}),
            "base_shift": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 100.0, "step": 0.01}),
            "width": WIDTH,
            "height": WIDTH,
        },
        {},
        ("MODEL",),
        False,
    ),
    "CLIPVisionLoader": (
        {"clip_name": (["sigclip_vision_patch14_384.safetensors"],)},
        {},
        ("CLIP_VISION",),
        False,
    ),
    "CLIPVisionEncode": (
        {"clip_vision": ("CLIP_VISION",), "image": ("IMAGE",), "crop": (["center", "none"],)},
        {},
        ("CLIP_VISION_OUTPUT",),
        False,
    ),
    "StyleModelLoader": (
        {"style_model_name": (["flux1-redux-dev.safetensors"],)},
        {},
        ("STYLE_MODEL",),
        False,
    ),
    "StyleModelApply": (
        {
            "conditioning": ("CONDITIONING",),
            "style_model": ("STYLE_MODEL",),
            "clip_vision_output": ("CLIP_VISION_OUTPUT",),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.001}),
            "strength_type": (["multiply", "attn_bias"],),
        },
        {},
        ("CONDITIONING",),
        False,
    ),
    "LoraLoaderModelOnly": (
        {
            "model": ("MODEL",),
            "lora_name": (["lora.safetensors"],),
            "strength_model": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}),
        },
        {},
        ("MODEL",),
        False,
    ),
}


def _schema_only(name: str, required: dict, optional: dict, returns: tuple[str, ...], output: bool) -> type:
    def run(self: Any, **_: Any) -> Any:
        raise RuntimeError(f"{name} is a schema-only test stand-in")

    spec = {"required": required} | ({"optional": optional} if optional else {})
    return type(
        name,
        (),
        {
            "INPUT_TYPES": classmethod(lambda cls: spec),
            "RETURN_TYPES": returns,
            "FUNCTION": "run",
            "OUTPUT_NODE": output,
            "CATEGORY": "test",
            "run": run,
        },
    )


def add_missing_core_nodes(registry: NodeRegistry) -> list[str]:
    """Register stand-ins for the core nodes the registry lacks; returns their names."""
    added = []
    for name, (required, optional, returns, output) in CORE.items():
        if name not in registry:
            registry.register_v1(
                name, _schema_only(name, required, optional, returns, output), source="tests"
            )
            added.append(name)
    return added
