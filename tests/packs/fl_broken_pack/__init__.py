"""A pack that needs ComfyUI's model internals at import time: it must fail alone."""

from comfy.model_base import Flux

MODEL = Flux(None)
NODE_CLASS_MAPPINGS = {}
