"""A pack that needs ComfyUI's model internals at import time: it must fail alone."""

import comfy.sd

MODEL = comfy.sd.load_checkpoint_guess_config("model.safetensors")
NODE_CLASS_MAPPINGS = {}
