"""ComfyUI's `comfy_api`: the V3 node API (`comfy_api.latest`; versioned names alias it)."""

from ..missing import module_getattr

__getattr__ = module_getattr(__name__, submodules=True)
