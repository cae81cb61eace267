"""ComfyUI's `comfy` package for packs: utils, model_management, samplers, cli_args (others are placeholders)."""

from ..missing import module_getattr

__getattr__ = module_getattr(__name__, submodules=True)
