"""Node packs on the web side: their report at `/api/fluxloom/packs`, and the app handed to them.

The report is plain data (one dict per pack: name, origin, loaded, error, nodes, ...) built by
main.py; web never imports the packs or `nodes`. Before the app starts, `services.attach_packs` gets
the app and three functions (JSON send, binary send, the running prompt's client id) so that
ComfyUI's `PromptServer.instance` of the packs mounts its routes here and reaches the real sockets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .helpers import WORKER, add_route
from .hub import Frame, Hub
from .services import WebServices
from .worker import PromptWorker

log = logging.getLogger(__name__)


def send_json_fn(hub: Hub) -> Any:
    def send_json(kind: str, data: Mapping[str, Any], sid: str | None = None) -> None:
        hub.send_json_threadsafe(kind, data, sid)

    return send_json


def send_bytes_fn(hub: Hub) -> Any:
    """Binary frames from node code (SaveImageWebsocket, packs' send_sync): never dropped as previews are."""

    def send_bytes(frame: bytes, sid: str | None = None) -> None:
        hub.send_threadsafe([Frame(binary=bytes(frame))], sid)

    return send_bytes


def current_client_fn(worker: PromptWorker) -> Any:
    def current_client() -> str | None:
        running = getattr(worker, "_running", None)
        return getattr(running, "client_id", None) if running is not None else None

    return current_client


def register_pack_routes(app: web.Application, services: WebServices) -> None:
    """`GET /api/fluxloom/packs`; then the packs' own routes (before the frontend's catch-all)."""

    async def packs(_request: web.Request) -> web.Response:
        report = [dict(p) for p in services.packs]
        return web.json_response(
            {
                "packs": report,
                "loaded": sum(1 for p in report if p.get("loaded")),
                "failed": sum(1 for p in report if not p.get("loaded")),
            }
        )

    add_route(app, "GET", "/fluxloom/packs", packs, bare=False)
    if services.attach_packs is not None:
        try:
            services.attach_packs(
                app, send_json_fn(services.hub), send_bytes_fn(services.hub), current_client_fn(app[WORKER])
            )
        except Exception:  # a pack's route must never stop the server
            log.exception("mounting the node packs' routes failed")
