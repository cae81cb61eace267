"""The app services nodes reach through `ctx.services` (built in main.py, passed down)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from executor.schema import NodeContext
from models.lora.cache import FileCache
from settings import Settings

if TYPE_CHECKING:
    from models.memory import MemoryManager
    from nodes.runtime.model_paths import ModelPaths


@dataclass(frozen=True)
class NodeServices:
    """What a node may use besides its inputs: settings, model folders and the memory manager.

    `model_paths` and `memory` are None only where a caller runs nodes without them (tests that
    drive single nodes); nodes that need them say so in their error.
    """

    settings: Settings
    model_paths: ModelPaths | None = None
    memory: MemoryManager | None = None
    loras: FileCache[Any] = field(default_factory=FileCache)  # parsed LoRA files (models.lora.cache)


# The context every built-in node receives.
Ctx: TypeAlias = NodeContext[NodeServices]
