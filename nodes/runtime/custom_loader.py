"""Loads third-party node packs: folders of packs, and packs installed with pip.

A pack is a package (folder with `__init__.py`) or a single `.py` file in one of the custom-node
folders, or a module named by an entry point in the `comfyui_legacy.custom_nodes` or
`comfyui.custom_nodes` group. It exports ComfyUI's `NODE_CLASS_MAPPINGS` (+
`NODE_DISPLAY_NAME_MAPPINGS`, `WEB_DIRECTORY`) or, for V3 packs, a `comfy_entrypoint()` returning an
extension whose `get_node_list()` gives the node classes.

Before the first pack is imported, ComfyUI's modules (`folder_paths`, `server`, `comfy.*`, ...) are
made importable (`nodes.compat`) and each pack's `prestartup_script.py` runs. Folder packs are
imported as `custom_nodes.<name>` under a `custom_nodes` package whose path is the folders, so
relative imports work wherever the folder lives. A pack that fails (prestartup, import, or every
node) is reported with the reason and skipped; loading goes on.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import runpy
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from executor.adapters import settle as _settle
from executor.errors import NodeDefinitionError
from executor.registry import NodeRegistry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUPS = ("comfyui_legacy.custom_nodes", "comfyui.custom_nodes")
PACKAGE = "custom_nodes"


@dataclass(frozen=True)
class LoadedPack:
    name: str
    path: Path | None
    nodes: tuple[str, ...] = ()
    web_directory: Path | None = None
    error: str | None = None
    seconds: float = 0.0
    origin: str = "folder"  # "folder" or "pip"
    skipped_nodes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the web app and the CLI."""
        return {
            "name": self.name,
            "path": str(self.path) if self.path is not None else None,
            "origin": self.origin,
            "loaded": self.error is None,
            "error": self.error,
            "nodes": list(self.nodes),
            "skipped_nodes": list(self.skipped_nodes),
            "web_directory": str(self.web_directory) if self.web_directory is not None else None,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class PackReport:
    packs: list[LoadedPack] = field(default_factory=list)

    @property
    def web_directories(self) -> dict[str, Path]:
        return {p.name: p.web_directory for p in self.packs if p.web_directory is not None}

    @property
    def failed(self) -> list[LoadedPack]:
        return [p for p in self.packs if p.error]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [p.as_dict() for p in self.packs]


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


def _import_pack(path: Path) -> ModuleType:
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


def _v3_nodes(entrypoint: Any) -> list[type]:
    extension = _settle(entrypoint())
    on_load = getattr(extension, "on_load", None)
    if on_load is not None:
        _settle(on_load())
    return list(_settle(extension.get_node_list()))


def _web_directory(module: ModuleType, base: Path | None, name: str) -> Path | None:
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


def _register_pack(module: ModuleType, name: str, registry: NodeRegistry) -> tuple[list[str], list[str]]:
    source = f"{PACKAGE}.{name}"
    registered: list[str] = []
    skipped: list[str] = []
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if mappings is not None:
        display = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
        for node_id, cls in mappings.items():
            reason = _taken(registry, node_id if hasattr(cls, "INPUT_TYPES") else _v3_node_id(cls))
            if reason is not None:
                log.warning("pack %s: node %s %s; skipped", name, node_id, reason)
                skipped.append(f"{node_id}: {reason}")
                continue
            _mark(cls, source)
            try:
                if hasattr(cls, "INPUT_TYPES"):
                    registry.register_v1(node_id, cls, display_name=display.get(node_id), source=source)
                    registered.append(node_id)
                else:
                    registered.append(registry.register(cls, source=source).node_id)
            except NodeDefinitionError as exc:  # one broken node does not take its pack down
                log.error("pack %s: node %s skipped: %s", name, node_id, exc)
                skipped.append(f"{node_id}: {exc}")
    elif hasattr(module, "comfy_entrypoint"):
        for cls in _v3_nodes(module.comfy_entrypoint):
            reason = _taken(registry, _v3_node_id(cls))
            if reason is not None:
                log.warning("pack %s: node %s %s; skipped", name, getattr(cls, "__name__", cls), reason)
                skipped.append(f"{getattr(cls, '__name__', cls)}: {reason}")
                continue
            _mark(cls, source)
            try:
                registered.append(registry.register(cls, source=source).node_id)
            except NodeDefinitionError as exc:
                log.error("pack %s: node %s skipped: %s", name, getattr(cls, "__name__", cls), exc)
                skipped.append(f"{getattr(cls, '__name__', cls)}: {exc}")
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


def _run_prestartup(name: str, script: Path) -> str | None:
    try:
        runpy.run_path(str(script), run_name=f"{PACKAGE}.{name}.prestartup_script")
    except (Exception, SystemExit) as exc:
        log.exception("pack %s: prestartup_script.py failed", name)
        return f"prestartup_script.py: {type(exc).__name__}: {exc}"
    return None


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Loader:
    def __init__(self, registry: NodeRegistry) -> None:
        from nodes.compat.host import HOST

        self.registry = registry
        self.host = HOST
        self.report = PackReport()
        self.names: set[str] = set()

    def load(
        self,
        name: str,
        path: Path | None,
        origin: str,
        importer: Any,
        base: Path | None,
        prestartup_error: str | None,
    ) -> None:
        start = time.perf_counter()
        self.host.loading_pack = name
        try:
            if prestartup_error is not None:
                raise RuntimeError(prestartup_error)
            module = importer()
            nodes, skipped = _register_pack(module, name, self.registry)
            web = _web_directory(module, base, name)
        except (Exception, SystemExit) as exc:  # any failure inside third-party code stays with its pack
            log.exception("custom node pack %s failed to load; skipped", name)
            self.report.packs.append(
                LoadedPack(
                    name, path, error=_error_text(exc), origin=origin, seconds=time.perf_counter() - start
                )
            )
            return
        finally:
            self.host.loading_pack = None
        seconds = time.perf_counter() - start
        self.report.packs.append(
            LoadedPack(name, path, tuple(nodes), web, None, seconds, origin, tuple(skipped))
        )
        log.info("loaded pack %s: %d nodes (%.2fs)", name, len(nodes), seconds)


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for group in ENTRY_POINT_GROUPS:
        for ep in importlib.metadata.entry_points(group=group):
            found.setdefault(ep.name, ep)
    return [found[k] for k in sorted(found)]


def _module_dir(module_name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else None


def load_custom_nodes(
    folders: Path | Sequence[Path],
    registry: NodeRegistry,
    *,
    entry_points: bool = False,
    services: Any = None,
) -> PackReport:
    """Import every pack of `folders` (and, with `entry_points`, every pip-installed pack) into `registry`.

    Never raises for a broken pack: the report says which loaded, with which nodes, and why others failed.
    """
    from nodes import compat

    folder_list = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]
    compat.install(services, registry)
    from nodes.compat.server import PromptServer

    if PromptServer.instance.attached:  # a second app in this process: packs imported now get a new server
        PromptServer()
    custom_nodes_package(f for f in folder_list if f.is_dir())
    loader = _Loader(registry)

    plan: list[tuple[str, Path | None, str, Any, Path | None]] = []
    for folder in folder_list:
        for path in _pack_entries(folder):
            name = path.stem if path.is_file() else path.name
            if name in loader.names:
                log.warning("pack %s in %s: a pack of that name is already loaded; skipped", name, folder)
                continue
            loader.names.add(name)
            plan.append(
                (name, path, "folder", lambda p=path: _import_pack(p), path if path.is_dir() else path.parent)
            )
    if entry_points:
        for ep in _entry_points():
            if ep.name in loader.names:
                log.info("pip pack %s is also in a custom-node folder; the folder copy is used", ep.name)
                continue
            loader.names.add(ep.name)
            top = ep.value.split(":")[0].split(".")[0]
            loader.host.pack_modules[top] = ep.name
            module_dir = _module_dir(ep.value.split(":")[0])
            plan.append((ep.name, module_dir, "pip", lambda e=ep: _load_entry_point(e), module_dir))

    prestartup: dict[str, str | None] = {}
    for name, pack_path, _origin, _importer, pack_base in plan:
        is_package = pack_base is not None and pack_path is not None and pack_path.is_dir()
        script = pack_base / "prestartup_script.py" if is_package and pack_base is not None else None
        prestartup[name] = _run_prestartup(name, script) if script is not None and script.is_file() else None

    for name, pack_path, origin, importer, pack_base in plan:
        loader.load(name, pack_path, origin, importer, pack_base, prestartup[name])
    _publish(loader.report, registry)
    return loader.report


def with_pack_folders(services: Any) -> Any:
    """`services` whose model_paths also search the folders packs registered with folder_paths."""
    import dataclasses

    from nodes.compat import folder_paths
    from nodes.compat.host import HOST

    if services is None or getattr(services, "model_paths", None) is None:
        return services
    merged = folder_paths.merged_into(services.model_paths)
    if merged is services.model_paths:
        return services
    services = dataclasses.replace(services, model_paths=merged)
    HOST.services = services
    return services


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> ModuleType:
    loaded = ep.load()
    if isinstance(loaded, ModuleType):
        return loaded
    if callable(loaded):  # an entry point naming `comfy_entrypoint` itself
        module = ModuleType(ep.name)
        module.comfy_entrypoint = loaded  # type: ignore[attr-defined]
        return module
    raise TypeError(f"entry point {ep.value!r} is neither a module nor a callable")


def _publish(report: PackReport, registry: NodeRegistry) -> None:
    """Keep ComfyUI's `nodes.NODE_CLASS_MAPPINGS` (if a pack already made it) in step with the registry."""
    import nodes

    if "NODE_CLASS_MAPPINGS" in vars(nodes):
        for pack in report.packs:
            for node_id in pack.nodes:
                node_type = registry.get(node_id)
                if node_type is not None and node_type.origin is not None:
                    nodes.NODE_CLASS_MAPPINGS[node_id] = node_type.origin
    if "EXTENSION_WEB_DIRS" in vars(nodes):
        nodes.EXTENSION_WEB_DIRS.update({k: str(v) for k, v in report.web_directories.items()})


def describe_report(report: PackReport) -> list[str]:
    """Lines for the startup log and `main.py packs`: one per pack with its load time and status."""
    lines = []
    for p in report.packs:
        status = f"FAILED: {p.error}" if p.error else f"{len(p.nodes)} nodes"
        where = f" ({p.origin})" if p.origin != "folder" else ""
        lines.append(f"{p.seconds:6.2f}s {p.name}{where}: {status}")
        lines += [f"         skipped node {s}" for s in p.skipped_nodes]
    return lines
