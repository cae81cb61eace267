"""The meta-path finder that serves ComfyUI's top-level module names from `nodes.compat`.

`import folder_paths` inside a pack gets `nodes.compat.folder_paths` (the same module object);
`comfy.*`, `comfy_extras.*`, `comfy_api.*` and `comfy_execution.*` names we do not implement get
placeholder modules (see `missing.py`). Our own top-level `nodes` package serves ComfyUI's `nodes`
module itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
from types import ModuleType
from typing import Any

from .missing import PlaceholderModule

log = logging.getLogger(__name__)

PREFIX = "nodes.compat"
# ComfyUI top-level modules we provide (and whose submodules we look up under nodes.compat).
PROVIDED = frozenset(
    {
        "folder_paths",
        "server",
        "comfy",
        "comfy_api",
        "comfy_execution",
        "comfy_extras",
        "node_helpers",
        "latent_preview",
        "execution",
    }
)
# Packages whose unknown submodules become placeholders.
PLACEHOLDER_ROOTS = frozenset({"comfy", "comfy_api", "comfy_execution", "comfy_extras"})


def _real_spec(fullname: str) -> importlib.machinery.ModuleSpec | None:
    try:
        return importlib.util.find_spec(f"{PREFIX}.{fullname}")
    except (ImportError, AttributeError, ValueError):
        return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target
        self._own_spec: Any = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._own_spec  # keep the module's own identity (importlib overwrote it)


class _PlaceholderLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        log.debug("ComfyUI module %s is not provided; a placeholder stands in", spec.name)
        return PlaceholderModule(spec.name)

    def exec_module(self, module: ModuleType) -> None:
        return None


class ComfyModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        root = fullname.partition(".")[0]
        if root not in PROVIDED:
            return None
        real = _real_spec(fullname)
        if real is not None:
            return importlib.machinery.ModuleSpec(
                fullname, _AliasLoader(real.name), is_package=real.submodule_search_locations is not None
            )
        if root in PLACEHOLDER_ROOTS:
            return importlib.machinery.ModuleSpec(fullname, _PlaceholderLoader(), is_package=True)
        return None


_FINDER = ComfyModuleFinder()


def install() -> None:
    """Put the finder first on sys.meta_path (idempotent)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
