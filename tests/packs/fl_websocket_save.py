"""A single-file pack in the style of ComfyUI's websocket_image_save.py example: images go out as
progress-bar previews (PNG, full size) to the prompt's client."""

import time

import comfy.utils
import numpy as np
from PIL import Image


class FLSaveImageWebsocket:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "fl/api"

    def save_images(self, images):
        pbar = comfy.utils.ProgressBar(images.shape[0])
        for step, image in enumerate(images):
            array = np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8)
            pbar.update_absolute(step, images.shape[0], ("PNG", Image.fromarray(array), None))
        return {}

    @classmethod
    def IS_CHANGED(cls, images):
        return time.time()


NODE_CLASS_MAPPINGS = {"FLSaveImageWebsocket": FLSaveImageWebsocket}
