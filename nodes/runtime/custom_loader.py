"""Loads third-party node packs from the custom_nodes folder, each in isolation.

A pack is a package (folder with `__init__.py`) or a single `.py` file exporting ComfyUI's
`NODE_CLASS_MAPPINGS` (+ `NODE_DISPLAY_NAME_MAPPINGS`, `WEB_DIRECTORY`) or, for V3 packs, a
`comfy_entrypoint()` returning an extension whose `get_node_list()` gives the node classes.
A pack that fails to import or register is logged with its name and skipped; startup goes on.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from executor.errors import NodeDefinitionError
from executor.registry import NodeRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedPack:
    name: str
    path: Path
    nodes: tuple[str, ...] = ()
    web_directory: Path | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class PackReport:
    packs: list[LoadedPack] = field(default_factory=list)

    @property
    def web_directories(self) -> dict[str, Path]:
        return {p.name: p.web_directory for p in self.packs if p.web_directory is not None}

    @property
    def failed(self) -> list[LoadedPack]:
        return [p for p in self.packs if p.error]


def _pack_entries(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    entries = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith((".", "_")) or path.name.endswith(".disabled"):
            continue
        if (path.is_dir() and (path / "__init__.py").exists()) or (path.is_file() and path.suffix == ".py"):
            entries.append(path)
    return entries


def _import_pack(path: Path) -> ModuleType:
    name = path.stem if path.is_file() else path.name
    module_name = f"custom_nodes.{name}"
    init = path if path.is_file() else path / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        module_name, init, submodule_search_locations=None if path.is_file() else [str(path)])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _v3_nodes(module: ModuleType) -> list[type]:
    extension = module.comfy_entrypoint()
    if inspect.isawaitable(extension):
        extension = asyncio.run(extension)
    nodes = extension.get_node_list()
    if inspect.isawaitable(nodes):
        nodes = asyncio.run(nodes)
    return list(nodes)


def _web_directory(module: ModuleType, path: Path) -> Path | None:
    relative = getattr(module, "WEB_DIRECTORY", None)
    if not relative:
        return None
    base = path if path.is_dir() else path.parent
    web = (base / relative).resolve()
    if not web.is_dir() or not web.is_relative_to(base.resolve()):
        log.warning("pack %s: WEB_DIRECTORY %r is not a folder inside the pack; ignored", path.name, relative)
        return None
    return web


def _register_pack(module: ModuleType, path: Path, registry: NodeRegistry) -> tuple[list[str], Path | None]:
    name = path.stem if path.is_file() else path.name
    source = f"custom_nodes.{name}"
    registered: list[str] = []
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if mappings is not None:
        display = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
        for node_id, cls in mappings.items():
            try:
                if hasattr(cls, "INPUT_TYPES"):
                    registry.register_v1(node_id, cls, display_name=display.get(node_id), source=source)
                else:
                    registry.register(cls, source=source)
                registered.append(node_id)
            except NodeDefinitionError as exc:  # one broken node does not take its pack down
                log.error("pack %s: node %s skipped: %s", name, node_id, exc)
    elif hasattr(module, "comfy_entrypoint"):
        for cls in _v3_nodes(module):
            try:
                registered.append(registry.register(cls, source=source).node_id)
            except NodeDefinitionError as exc:
                log.error("pack %s: node %s skipped: %s", name, getattr(cls, "__name__", cls), exc)
    else:
        log.warning("pack %s exports neither NODE_CLASS_MAPPINGS nor comfy_entrypoint", name)
    return registered, _web_directory(module, path)


def load_custom_nodes(folder: Path, registry: NodeRegistry) -> PackReport:
    """Import every pack in `folder` and register its nodes; never raises for a broken pack."""
    report = PackReport()
    for path in _pack_entries(folder):
        name = path.stem if path.is_file() else path.name
        start = time.perf_counter()
        try:
            module = _import_pack(path)
            nodes, web = _register_pack(module, path, registry)
        except Exception as exc:  # any failure inside third-party code is isolated to its pack
            log.exception("custom node pack %s failed to load; skipped", name)
            report.packs.append(LoadedPack(name, path, error=f"{type(exc).__name__}: {exc}",
                                           seconds=time.perf_counter() - start))
            continue
        report.packs.append(LoadedPack(name, path, tuple(nodes), web, seconds=time.perf_counter() - start))
        log.info("loaded pack %s: %d nodes (%.2fs)", name, len(nodes), time.perf_counter() - start)
    return report


def describe_report(report: PackReport) -> list[str]:
    """Lines for the startup log: one per pack with its load time and status."""
    return [f"{p.seconds:6.2f}s {'FAILED ' if p.error else ''}{p.name}" for p in report.packs]
