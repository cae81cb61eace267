"""ComfyUI's `server` module for packs: `PromptServer.instance` and `BinaryEventTypes`.

`routes` is an aiohttp RouteTableDef that packs decorate at import; the app mounts it (plain and
under `/api`) before it starts. `app` is the real aiohttp application once attached; before that
(while packs import) it records router calls and replays them on the real app. `send_sync`/`send`
go to the real WebSocket clients, binary events included; `client_id` is the running prompt's.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Callable
from enum import IntEnum
from typing import Any

from aiohttp import web

from nodes.runtime.channel import CHANNEL, image_frame

from .missing import module_getattr

log = logging.getLogger(__name__)

__getattr__ = module_getattr(__name__)


class BinaryEventTypes(IntEnum):
    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


def encode_image(image_data: Any) -> bytes:
    """`(format, PIL image, max_size)` -> a type-1 image frame (see `nodes.runtime.channel.image_frame`)."""
    return image_frame(*(list(image_data) + [None, None, None])[:3])


def encode_image_with_metadata(data: Any) -> bytes:
    """`((format, PIL image, max_size), metadata)` -> type 4: u32 4, u32 len, metadata JSON, image bytes."""
    image_data, metadata = data
    raw = encode_image(image_data)[8:]
    image_type = str(image_data[0] or "PNG").upper()
    meta = json.dumps({**dict(metadata or {}), "image_type": f"image/{image_type.lower()}"}).encode()
    return struct.pack(">II", int(BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA), len(meta)) + meta + raw


def encode_text(node_id: str, text: str) -> bytes:
    """A TEXT event (3): u32 3, u32 node id length, node id, text (UTF-8)."""
    node = str(node_id).encode()
    return struct.pack(">II", int(BinaryEventTypes.TEXT), len(node)) + node + text.encode()


class _Recorder:
    """Stands in for an aiohttp object before the app exists: method calls are kept and replayed."""

    def __init__(
        self, calls: list[tuple[tuple[str, ...], tuple[Any, ...], dict[str, Any]]], path: tuple[str, ...]
    ):
        self._calls = calls
        self._path = path

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Recorder(self._calls, (*self._path, name))

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self._calls.append((self._path, args, kwargs))


class _PendingApp:
    """`PromptServer.instance.app` while packs import: records router/middleware/signal use."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], tuple[Any, ...], dict[str, Any]]] = []
        self.router = _Recorder(self.calls, ("router",))
        self.middlewares: list[Any] = []
        self.on_startup: list[Any] = []
        self.on_shutdown: list[Any] = []
        self.on_cleanup: list[Any] = []

    def add_routes(self, routes: Any) -> None:
        self.calls.append((("add_routes",), (routes,), {}))

    def replay(self, app: web.Application) -> None:
        for path, args, kwargs in self.calls:
            target: Any = app
            for name in path:
                target = getattr(target, name)
            try:
                target(*args, **kwargs)
            except Exception:
                log.exception("a pack's %s call on the server app failed", ".".join(path))
        app.middlewares.extend(self.middlewares)
        app.on_startup.extend(self.on_startup)
        app.on_shutdown.extend(self.on_shutdown)
        app.on_cleanup.extend(self.on_cleanup)


def _current_context() -> Any:
    from executor.adapters import current_context

    return current_context()


class PromptServer:
    """What packs reach as `PromptServer.instance`."""

    instance: PromptServer

    def __init__(self) -> None:
        PromptServer.instance = self
        self.routes = web.RouteTableDef()
        self.app: Any = _PendingApp()
        self.supports = ["custom_nodes_from_web"]
        self.on_prompt_handlers: list[Callable[[dict[str, Any]], dict[str, Any]]] = []
        self.web_root = ""
        self.number = 0
        self.loop: Any = None
        self.messages: Any = None
        self.prompt_queue: Any = None
        self._attached = False

    @property
    def attached(self) -> bool:
        return self._attached

    # --- the app ------------------------------------------------------------------------------
    def attach(self, app: web.Application) -> None:
        """Mount the packs' routes and replay their app calls on the real app (before it starts)."""
        pending = self.app
        if isinstance(pending, _PendingApp):
            pending.replay(app)
        self.add_routes(app)
        self.app = app
        self._attached = True

    def add_routes(self, app: web.Application | None = None) -> None:
        target = app if app is not None else self.app
        for route in self.routes:
            if not isinstance(route, web.RouteDef):
                target.router.add_routes([route])
                continue
            paths = [route.path]
            if not route.path.startswith("/api/"):
                paths.append("/api" + route.path)
            for path in paths:
                try:
                    target.router.add_route(route.method, path, route.handler, **route.kwargs)
                except (RuntimeError, ValueError) as exc:
                    log.warning("pack route %s %s not added: %s", route.method, path, exc)

    def add_on_prompt_handler(self, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.on_prompt_handlers.append(handler)

    def trigger_on_prompt(self, json_data: dict[str, Any]) -> dict[str, Any]:
        for handler in self.on_prompt_handlers:
            try:
                changed = handler(json_data)
            except Exception:
                log.exception("an on_prompt handler failed")
                continue
            if isinstance(changed, dict):
                json_data = changed
        return json_data

    # --- state ----------------------------------------------------------------------------------
    @property
    def client_id(self) -> str | None:
        return CHANNEL.current_client()

    @property
    def last_node_id(self) -> str | None:
        ctx = _current_context()
        return getattr(ctx, "node_id", None)

    @property
    def last_prompt_id(self) -> str | None:
        ctx = _current_context()
        return getattr(ctx, "prompt_id", None)

    # --- messages -------------------------------------------------------------------------------
    def send_sync(self, event: str | int, data: Any, sid: str | None = None) -> None:
        """Send to client `sid` (None: everyone) from any thread."""
        if isinstance(event, int):
            if event == BinaryEventTypes.UNENCODED_PREVIEW_IMAGE:
                CHANNEL.send_bytes(encode_image(data), sid)
            elif event == BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA:
                CHANNEL.send_bytes(encode_image_with_metadata(data), sid)
            else:
                CHANNEL.send_bytes(struct.pack(">I", int(event)) + bytes(data), sid)
            return
        if isinstance(data, (bytes, bytearray)):
            log.warning("send_sync(%r): bytes need a BinaryEventTypes event; not sent", event)
            return
        CHANNEL.send_json(str(event), data if data is not None else {}, sid)

    async def send(self, event: str | int, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_bytes(self, event: int, data: bytes, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    def send_progress_text(self, text: str | bytes, node_id: str, sid: str | None = None) -> None:
        body = text.decode() if isinstance(text, bytes) else str(text)
        CHANNEL.send_bytes(encode_text(node_id, body), sid if sid is not None else self.client_id)

    def queue_updated(self) -> None:
        return None


PromptServer()
