"""ComfyUI's `execution` module: imported by some packs for names only (placeholders)."""

from .missing import module_getattr

__getattr__ = module_getattr(__name__)
