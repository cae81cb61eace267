"""Registering an imported pack's nodes: V1 `NODE_CLASS_MAPPINGS` or a V3 `comfy_entrypoint`, first
definition of a node id wins, one broken node skips only itself; and the pack's `WEB_DIRECTORY`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import Any

from executor.adapters import settle as _settle
from executor.errors import NodeDefinitionError
from executor.registry import NodeRegistry

from .pack_import import PACKAGE

log = logging.getLogger(__name__)


def _v3_nodes(entrypoint: Any) -> list[type]:
    extension = _settle(entrypoint())
    on_load = getattr(extension, "on_load", None)
    if on_load is not None:
        _settle(on_load())
    return list(_settle(extension.get_node_list()))


def web_directory(module: ModuleType, base: Path | None, name: str) -> Path | None:
    relative = getattr(module, "WEB_DIRECTORY", None)
    if not relative or base is None:
        return None
    web = (base / relative).resolve()
    if not web.is_dir() or not web.is_relative_to(base.resolve()):
        log.warning("pack %s: WEB_DIRECTORY %r is not a folder inside the pack; ignored", name, relative)
        return None
    return web


def _taken(registry: NodeRegistry, node_id: str | None) -> str | None:
    """Why `node_id` cannot be registered by a pack (as ComfyUI: the first definition stays), or None."""
    if node_id is None or node_id not in registry:
        return None
    source = registry[node_id].source
    return "replaces a built-in node" if source == "nodes" else f"already defined by {source}"


def _v3_node_id(cls: Any) -> str | None:
    try:
        return str(cls.define_schema().node_id)
    except Exception:  # the registry reports the broken schema itself
        return None


def register_pack(module: ModuleType, name: str, registry: NodeRegistry) -> tuple[list[str], list[str]]:
    """Register the pack's nodes; returns (registered ids, "label: reason" for each node skipped)."""
    source = f"{PACKAGE}.{name}"
    registered: list[str] = []
    skipped: list[str] = []

    def add(
        cls: Any, label: Any, node_id: str | None, v1: bool = False, display_name: str | None = None
    ) -> None:
        """Register `cls` unless `node_id` is taken (a V1 class under `label`, its mapping key)."""
        reason = _taken(registry, node_id)
        if reason is not None:
            log.warning("pack %s: node %s %s; skipped", name, label, reason)
            skipped.append(f"{label}: {reason}")
            return
        _mark(cls, source)
        try:
            if v1:
                registry.register_v1(label, cls, display_name=display_name, source=source)
                registered.append(label)
            else:
                registered.append(registry.register(cls, source=source).node_id)
        except NodeDefinitionError as exc:  # one broken node does not take its pack down
            log.error("pack %s: node %s skipped: %s", name, label, exc)
            skipped.append(f"{label}: {exc}")

    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if mappings is not None:
        display = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
        for node_id, cls in mappings.items():
            v1 = hasattr(cls, "INPUT_TYPES")
            add(cls, node_id, node_id if v1 else _v3_node_id(cls), v1, display.get(node_id))
    elif hasattr(module, "comfy_entrypoint"):
        for cls in _v3_nodes(module.comfy_entrypoint):
            add(cls, getattr(cls, "__name__", cls), _v3_node_id(cls))
    else:
        log.warning("pack %s exports neither NODE_CLASS_MAPPINGS nor comfy_entrypoint", name)
    if not registered and skipped:
        raise NodeDefinitionError(f"none of its {len(skipped)} nodes could be registered ({skipped[0]})")
    return registered, skipped


def _mark(cls: Any, source: str) -> None:
    """ComfyUI sets RELATIVE_PYTHON_MODULE on every pack class (`custom_nodes.<pack>`)."""
    try:
        cls.RELATIVE_PYTHON_MODULE = source
    except (AttributeError, TypeError):
        pass
