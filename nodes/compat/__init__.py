"""ComfyUI's modules for third-party node packs, written on Fluxloom's engine.

`install(services, registry)` points them at the app and puts a meta-path finder in place, so a
pack's `import folder_paths`, `from server import PromptServer`, `import comfy.utils`,
`from comfy_api.latest import io` resolve here. Tier 1 (folders, server, progress, device helpers,
sampler names, V3 io/ui, node helpers) behaves for real; other `comfy.*` names are placeholders that
raise `MissingComfyFeature` when used.
"""

from __future__ import annotations

from typing import Any

from .finder import install as install_finder
from .host import HOST, configure
from .missing import MissingComfyFeature

__all__ = ["HOST", "MissingComfyFeature", "install"]


def install(services: Any = None, registry: Any = None) -> None:
    """Configure the modules for the app and make ComfyUI's names importable (idempotent)."""
    configure(services, registry)
    install_finder()
