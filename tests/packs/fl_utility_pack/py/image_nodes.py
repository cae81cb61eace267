"""Image nodes using ComfyUI's modules at import, schema and run time."""

import os

import comfy.cli_args
import comfy.model_management as mm
import comfy.samplers
import comfy.sd  # noqa: F401  (imported, never used: a placeholder is enough)
import comfy.utils
import folder_paths
import latent_preview  # noqa: F401
import node_helpers
import torch
from comfy_execution.graph import ExecutionBlocker  # noqa: F401
from server import PromptServer

from nodes import MAX_RESOLUTION, SaveImage

folder_paths.add_model_folder_path("luts", os.path.join(folder_paths.models_dir, "luts"))
folder_paths.add_model_folder_path("loras", os.path.join(folder_paths.models_dir, "fl_loras"))
PREVIEW_METHOD = comfy.cli_args.args.preview_method
_ = node_helpers.pillow


class ImageResizeFL:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "width": ("INT", {"default": 64, "min": 1, "max": MAX_RESOLUTION}),
                "height": ("INT", {"default": 64, "min": 1, "max": MAX_RESOLUTION}),
                "method": (["nearest-exact", "bilinear", "area", "bicubic"],),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "resize"
    CATEGORY = "fl/image"

    def resize(self, image, width, height, method):
        device = mm.get_torch_device()
        pbar = comfy.utils.ProgressBar(image.shape[0])
        out = []
        for frame in image:
            mm.throw_exception_if_processing_interrupted()
            chw = frame.movedim(-1, 0).unsqueeze(0).to(device)
            out.append(
                comfy.utils.common_upscale(chw, width, height, method, "disabled").to(
                    mm.intermediate_device()
                )
            )
            pbar.update(1)
        return (torch.cat(out).movedim(1, -1),)


class MaskPreviewFL(SaveImage):
    """A SaveImage subclass writing to the temp folder (essentials' mask preview)."""

    def __init__(self):
        self.output_dir = folder_paths.get_temp_directory()
        self.type = "temp"
        self.prefix_append = "_temp_fl"
        self.compress_level = 4

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"mask": ("MASK",)},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    FUNCTION = "execute"

    def execute(self, mask, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        preview = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3)
        return self.save_images(preview, filename_prefix, prompt, extra_pnginfo)


class SamplerSelectorFL:
    """Sampler and scheduler names as widgets and as output types (rgthree's sampler config)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS,),
            }
        }

    RETURN_TYPES = (comfy.samplers.KSampler.SAMPLERS, comfy.samplers.KSampler.SCHEDULERS)
    RETURN_NAMES = ("sampler_name", "scheduler")
    FUNCTION = "select"
    CATEGORY = "fl/sampling"

    def select(self, sampler_name, scheduler):
        return (sampler_name, scheduler)


class NotifyFL:
    """Pushes a message to the client that queued the prompt (Custom-Scripts' notifications)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "done"})}, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    FUNCTION = "notify"
    OUTPUT_NODE = True
    CATEGORY = "fl/utils"

    def notify(self, text, unique_id=None):
        server = PromptServer.instance
        server.send_sync("fl_utility.notify", {"text": text, "node": unique_id}, server.client_id)
        return {"ui": {"text": [text]}}


NODE_CLASS_MAPPINGS = {
    "ImageResizeFL": ImageResizeFL,
    "MaskPreviewFL": MaskPreviewFL,
    "SamplerSelectorFL": SamplerSelectorFL,
    "NotifyFL": NotifyFL,
}
