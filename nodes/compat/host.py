"""What the ComfyUI modules for packs run against: the app's services, registry and client channel.

ComfyUI's modules are process-wide singletons (`folder_paths`, `PromptServer.instance`, ...), so the
modules that stand in for them read this one holder. main.py fills it (`configure`) before any pack
is imported; tests may configure it with their own folders.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Host:
    services: Any = None  # nodes.runtime.services.NodeServices
    registry: Any = None  # executor.registry.NodeRegistry the packs are added to
    loading_pack: str | None = None  # the pack being imported right now (named in placeholder errors)
    pack_modules: dict[str, str] = field(default_factory=dict)  # top-level module name -> pack name


HOST = Host()


def configure(services: Any = None, registry: Any = None) -> Host:
    """Point the ComfyUI modules at the app's services and registry (folders, memory, settings)."""
    if services is not None:
        HOST.services = services
    if registry is not None:
        HOST.registry = registry
    from . import folder_paths

    folder_paths.reset_from_services(HOST.services)
    return HOST


def settings() -> Any:
    services = HOST.services
    if services is None:
        from settings import Settings

        return Settings()
    return services.settings


def pack_of_caller(depth: int = 2) -> str:
    """The pack whose code is calling: from the caller's module name, else the pack being loaded."""
    frame: FrameType | None = sys._getframe(depth)
    for _ in range(12):
        if frame is None:
            break
        name = str(frame.f_globals.get("__name__", ""))
        if name.startswith("custom_nodes."):
            return name.split(".")[1]
        top = name.split(".")[0]
        if top in HOST.pack_modules:
            return HOST.pack_modules[top]
        if not name.startswith(("nodes.compat", "importlib")):
            break
        frame = frame.f_back
    return HOST.loading_pack or "unknown pack"
