"""/internal/* (no /api prefix, frontend-only): server logs, folder paths, input/output file lists."""

from __future__ import annotations

import logging
import threading
from collections import deque
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from .helpers import BadRequest, field_of, read_object
from .hub import Hub, json_frame
from .services import WebServices
from .view import FOLDER_TYPES

LOG_LINES = 1000


class LogBuffer(logging.Handler):
    """Keeps the last log lines for the frontend's terminal and pushes new ones to subscribed sockets."""

    def __init__(self, hub: Hub, capacity: int = LOG_LINES) -> None:
        super().__init__(logging.INFO)
        self.hub = hub
        self.entries: deque[dict[str, str]] = deque(maxlen=capacity)
        self.subscribers: set[str] = set()
        self._local = threading.local()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "busy", False):  # sending may log; never recurse
            return
        self._local.busy = True
        try:
            entry = {
                "t": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
                "m": self.format(record) + "\n",
            }
            self.entries.append(entry)
            for sid in tuple(self.subscribers):
                self.hub.send_threadsafe([json_frame("logs", {"entries": [entry]}, droppable=True)], sid)
        except Exception:
            self.handleError(record)
        finally:
            self._local.busy = False


LOG_BUFFER = web.AppKey("log_buffer", LogBuffer)


class InternalRoutes:
    def __init__(self, services: WebServices, logs: LogBuffer) -> None:
        self.services = services
        self.logs = logs

    async def logs_text(self, request: web.Request) -> web.Response:
        return web.json_response("".join(e["m"] for e in self.logs.entries))

    async def logs_raw(self, request: web.Request) -> web.Response:
        return web.json_response({"entries": list(self.logs.entries), "size": {"cols": 120, "rows": 40}})

    async def subscribe(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        client_id = field_of(body, "clientId", str)
        if not client_id:
            raise BadRequest("'clientId' is required")
        if field_of(body, "enabled", bool, False):
            self.logs.subscribers.add(client_id)
        else:
            self.logs.subscribers.discard(client_id)
        return web.Response(status=200)

    async def folder_paths(self, request: web.Request) -> web.Response:
        catalog = self.services.model_paths
        out: dict[str, Any] = {}
        if catalog is not None:
            out = {
                kind: [str(p.resolve()) for p in catalog.folders_for(kind)]
                for kind in sorted(catalog.folders)
            }
        return web.json_response(out)

    async def files(self, request: web.Request) -> web.Response:
        kind = request.match_info["directory_type"]
        if kind not in FOLDER_TYPES:
            raise BadRequest(f"directory type must be one of {', '.join(FOLDER_TYPES)}, got {kind!r}")
        folder = self.services.folder(kind)
        files = (
            [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
            if folder.is_dir()
            else []
        )
        files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        return web.json_response([p.name for p in files])


def register_internal_routes(app: web.Application, services: WebServices) -> None:
    logs = LogBuffer(services.hub)
    app[LOG_BUFFER] = logs

    async def attach(_app: web.Application) -> None:
        logging.getLogger().addHandler(logs)

    async def detach(_app: web.Application) -> None:
        logging.getLogger().removeHandler(logs)

    app.on_startup.append(attach)
    app.on_cleanup.append(detach)
    routes = InternalRoutes(services, logs)
    app.router.add_get("/internal/logs", routes.logs_text)
    app.router.add_get("/internal/logs/raw", routes.logs_raw)
    app.router.add_patch("/internal/logs/subscribe", routes.subscribe)
    app.router.add_get("/internal/folder_paths", routes.folder_paths)
    app.router.add_get("/internal/files/{directory_type}", routes.files)
