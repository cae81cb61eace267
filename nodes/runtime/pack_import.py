"""Finding and importing node packs: the pack folders' entries, the `custom_nodes` package they are
imported under, each pack's `prestartup_script.py`, and packs pip installed under an entry point.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import runpy
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

PACKAGE = "custom_nodes"


def pack_entries(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    entries = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith((".", "_")) or path.name.endswith(".disabled"):
            continue
        if (path.is_dir() and (path / "__init__.py").exists()) or (path.is_file() and path.suffix == ".py"):
            entries.append(path)
    return entries


def custom_nodes_package(folders: Iterable[Path]) -> ModuleType:
    """The `custom_nodes` package in sys.modules, its `__path__` extended with `folders`."""
    package = sys.modules.get(PACKAGE)
    if package is None or not hasattr(package, "__path__"):
        package = ModuleType(PACKAGE, "Third-party node packs (one submodule per pack).")
        spec = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
        package.__spec__ = spec
        package.__path__ = []
        spec.submodule_search_locations = package.__path__
        sys.modules[PACKAGE] = package
    for folder in folders:
        text = str(Path(folder).resolve())
        if text not in package.__path__:
            package.__path__.append(text)
    return package


def _module_name(path: Path) -> str:
    name = path.stem if path.is_file() else path.name
    return f"{PACKAGE}.{name.replace('.', '_x_')}"


def import_pack(path: Path) -> ModuleType:
    module_name = _module_name(path)
    init = path if path.is_file() else path / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        module_name, init, submodule_search_locations=None if path.is_file() else [str(path)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    for stale in [m for m in sys.modules if m == module_name or m.startswith(module_name + ".")]:
        del sys.modules[stale]  # loading again (a second app in one process) re-imports every file
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    setattr(sys.modules[PACKAGE], module_name.rpartition(".")[2], module)
    return module


def run_prestartup(name: str, script: Path) -> str | None:
    try:
        runpy.run_path(str(script), run_name=f"{PACKAGE}.{name}.prestartup_script")
    except (Exception, SystemExit) as exc:
        log.exception("pack %s: prestartup_script.py failed", name)
        return f"prestartup_script.py: {type(exc).__name__}: {exc}"
    return None


def module_dir(module_name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else None


def load_entry_point(ep: importlib.metadata.EntryPoint) -> ModuleType:
    loaded = ep.load()
    if isinstance(loaded, ModuleType):
        return loaded
    if callable(loaded):  # an entry point naming `comfy_entrypoint` itself
        module = ModuleType(ep.name)
        module.comfy_entrypoint = loaded  # type: ignore[attr-defined]
        return module
    raise TypeError(f"entry point {ep.value!r} is neither a module nor a callable")
