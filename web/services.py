"""What the web app is built from: the engine objects main.py wires, plus the WebSocket hub."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from executor.queue import PromptQueue
from executor.registry import NodeRegistry
from executor.run import Executor
from settings import Settings

from .hub import Hub


class ModelCatalog(Protocol):
    """Model folders by kind (nodes.runtime.model_paths.ModelPaths satisfies it; web never imports nodes)."""

    folders: Mapping[str, tuple[Path, ...]]

    def list_models(self, kind: str) -> list[str]: ...

    def folders_for(self, kind: str) -> tuple[Path, ...]: ...

    def resolve(self, kind: str, name: str) -> Path: ...


@dataclass(frozen=True)
class WebServices:
    """Everything route handlers may use. Built once in main.py (or a test) and passed to create_app.

    `node_services` is handed to the registry for object_info and validation (live option lists).
    `free_models` unloads models from the device (POST /free `unload_models`); `device_stats` returns
    ComfyUI's `devices` list for /system_stats. Both are provided by main.py, which may use torch.
    """

    settings: Settings
    registry: NodeRegistry
    executor: Executor
    queue: PromptQueue
    node_services: Any = None
    model_paths: ModelCatalog | None = None
    web_directories: Mapping[str, Path] = field(default_factory=dict)
    free_models: Callable[[], None] | None = None
    device_stats: Callable[[], list[dict[str, Any]]] | None = None
    hub: Hub = field(default_factory=Hub)
    progress_interval_s: float = 0.05  # progress messages per node at most this often (last one always sent)
    state_interval_s: float = 0.25  # full progress_state messages at most this often (web/sink.py)
    version: str = "0.1.0"
    argv: tuple[str, ...] = ()
    # Node packs: their report as plain dicts, and main.py's hook that hands them the app and sockets
    # (called with the app, send_json, send_bytes and current_client functions before the app starts).
    packs: tuple[Mapping[str, Any], ...] = ()
    attach_packs: Callable[..., None] | None = None
    on_prompt: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # packs' handlers of POST /prompt

    @property
    def max_upload_bytes(self) -> int:
        return int(self.settings.max_upload_size_mb * 1024 * 1024)

    def folder(self, kind: str) -> Path:
        """The input/output/temp folder (absolute). Raises KeyError for any other kind."""
        paths = {
            "input": self.settings.input_dir,
            "output": self.settings.output_dir,
            "temp": self.settings.temp_dir,
        }
        return Path(paths[kind]).resolve()
