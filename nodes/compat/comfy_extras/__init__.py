"""ComfyUI's `comfy_extras`: every submodule is a placeholder (our built-in nodes live in `nodes`)."""

from ..missing import module_getattr

__getattr__ = module_getattr(__name__, submodules=True)
