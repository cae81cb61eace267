"""The app services nodes may reach through `ctx.services` (built in main.py, passed down)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from settings import Settings


@dataclass(frozen=True)
class NodeServices:
    settings: Settings
    model_paths: Any = None  # nodes.runtime.model_paths.ModelPaths
    memory: Any = None  # models.memory.MemoryManager, when installed
