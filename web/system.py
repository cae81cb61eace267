"""System and catalogue routes: system_stats, features, models, embeddings, i18n, and the optional
frontend routes (global subgraphs, node replacements, workflow templates) answered empty so the UI
degrades cleanly instead of logging errors."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from .helpers import BadRequest, add_route
from .services import WebServices


def server_features(services: WebServices) -> dict[str, Any]:
    """The feature flags we implement (/features and the WebSocket `feature_flags` answer)."""
    return {"supports_preview_metadata": True, "max_upload_size": services.max_upload_bytes}


def memory_bytes() -> tuple[int, int]:
    """(total, available) RAM in bytes; zeros where the platform does not tell."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        values: dict[str, int] = {}
        for line in meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[key] = int(parts[0]) * 1024
        return values.get("MemTotal", 0), values.get("MemAvailable", values.get("MemFree", 0))
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return 0, 0


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


class SystemRoutes:
    def __init__(self, services: WebServices) -> None:
        self.services = services

    async def system_stats(self, request: web.Request) -> web.Response:
        total, free = memory_bytes()
        devices = (
            self.services.device_stats()
            if self.services.device_stats
            else [
                {
                    "name": "cpu",
                    "type": "cpu",
                    "index": None,
                    # without a compute device ComfyUI reports system memory as the CPU's VRAM
                    "vram_total": total,
                    "vram_free": free,
                    "torch_vram_total": total,
                    "torch_vram_free": free,
                }
            ]
        )
        system = {
            "os": sys.platform,
            "ram_total": total,
            "ram_free": free,
            "comfyui_version": self.services.version,
            "required_frontend_version": "",
            "installed_templates_version": "",
            "required_templates_version": "",
            "comfy_package_versions": [],
            "python_version": platform.python_version(),
            "pytorch_version": _package_version("torch"),
            "embedded_python": False,
            "deploy_environment": "local",
            "argv": list(self.services.argv),
        }
        return web.json_response({"system": system, "devices": devices})

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(server_features(self.services))

    def _catalog_kinds(self) -> list[str]:
        catalog = self.services.model_paths
        return sorted(catalog.folders) if catalog is not None else []

    def _files(self, kind: str) -> list[str]:
        catalog = self.services.model_paths
        if catalog is None or kind not in catalog.folders:
            raise BadRequest(f"unknown model folder {kind!r}", status=404)
        return catalog.list_models(kind)

    async def model_kinds(self, request: web.Request) -> web.Response:
        return web.json_response(self._catalog_kinds())

    async def model_files(self, request: web.Request) -> web.Response:
        return web.json_response(self._files(request.match_info["folder"]))

    async def experiment_models(self, request: web.Request) -> web.Response:
        catalog = self.services.model_paths
        return web.json_response(
            [
                {"name": kind, "folders": [str(f) for f in catalog.folders_for(kind)]}
                for kind in self._catalog_kinds()
            ]
            if catalog is not None
            else []
        )

    async def experiment_model_files(self, request: web.Request) -> web.Response:
        return web.json_response(
            [{"name": name, "pathIndex": 0} for name in self._files(request.match_info["folder"])]
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        if "embeddings" not in self._catalog_kinds():
            return web.json_response([])
        return web.json_response([name.rsplit(".", 1)[0] for name in self._files("embeddings")])

    async def empty_object(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def not_found(self, request: web.Request) -> web.Response:
        return web.json_response({"error": "not found"}, status=404)


def register_system_routes(app: web.Application, services: WebServices) -> None:
    routes = SystemRoutes(services)
    add_route(app, "GET", "/system_stats", routes.system_stats)
    add_route(app, "GET", "/features", routes.features)
    add_route(app, "GET", "/models", routes.model_kinds)
    add_route(app, "GET", "/models/{folder}", routes.model_files)
    add_route(app, "GET", "/experiment/models", routes.experiment_models)
    add_route(app, "GET", "/experiment/models/{folder}", routes.experiment_model_files)
    add_route(app, "GET", "/embeddings", routes.embeddings)
    # No custom-node translations, blueprints, replacements or pack templates: empty, not errors.
    add_route(app, "GET", "/i18n", routes.empty_object)
    add_route(app, "GET", "/global_subgraphs", routes.empty_object)
    add_route(app, "GET", "/global_subgraphs/{subgraph_id}", routes.not_found)
    add_route(app, "GET", "/node_replacements", routes.empty_object)
    add_route(app, "GET", "/workflow_templates", routes.empty_object)
