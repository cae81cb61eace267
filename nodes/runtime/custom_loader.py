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

import importlib.metadata
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from executor.registry import NodeRegistry

from .pack_import import (
    PACKAGE,
    custom_nodes_package,
    import_pack,
    load_entry_point,
    module_dir,
    pack_entries,
    run_prestartup,
)
from .pack_registration import register_pack, web_directory

__all__ = [
    "PACKAGE",
    "LoadedPack",
    "PackReport",
    "custom_nodes_package",
    "describe_report",
    "load_custom_nodes",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUPS = ("comfyui_legacy.custom_nodes", "comfyui.custom_nodes")


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
            nodes, skipped = register_pack(module, name, self.registry)
            web = web_directory(module, base, name)
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
        for path in pack_entries(folder):
            name = path.stem if path.is_file() else path.name
            if name in loader.names:
                log.warning("pack %s in %s: a pack of that name is already loaded; skipped", name, folder)
                continue
            loader.names.add(name)
            plan.append(
                (name, path, "folder", lambda p=path: import_pack(p), path if path.is_dir() else path.parent)
            )
    if entry_points:
        for ep in _entry_points():
            if ep.name in loader.names:
                log.info("pip pack %s is also in a custom-node folder; the folder copy is used", ep.name)
                continue
            loader.names.add(ep.name)
            top = ep.value.split(":")[0].split(".")[0]
            loader.host.pack_modules[top] = ep.name
            pack_dir = module_dir(ep.value.split(":")[0])
            plan.append((ep.name, pack_dir, "pip", lambda e=ep: load_entry_point(e), pack_dir))

    prestartup: dict[str, str | None] = {}
    for name, pack_path, _origin, _importer, pack_base in plan:
        is_package = pack_base is not None and pack_path is not None and pack_path.is_dir()
        script = pack_base / "prestartup_script.py" if is_package and pack_base is not None else None
        prestartup[name] = run_prestartup(name, script) if script is not None and script.is_file() else None

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
