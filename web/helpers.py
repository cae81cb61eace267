"""Request helpers shared by the route modules: dual /api registration, tolerant JSON, typed 400s."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .services import WebServices
from .worker import PromptWorker

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVICES = web.AppKey("services", WebServices)
WORKER = web.AppKey("worker", PromptWorker)


class BadRequest(Exception):
    """A client error: answered with `status` and `{"error": message}` (or `body` when given)."""

    def __init__(self, message: str, *, status: int = 400, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body

    def response(self) -> web.Response:
        body = self.body if self.body is not None else {"error": self.message}
        return web.json_response(body, status=self.status)


def add_route(app: web.Application, method: str, path: str, handler: Handler, *, bare: bool = True) -> None:
    """Register `path` under `/api` and, unless `bare` is False, without the prefix (as ComfyUI does)."""
    app.router.add_route(method, "/api" + path, handler)
    if bare:
        app.router.add_route(method, path, handler)


async def read_json(request: web.Request, *, default: Any = ..., what: str = "request body") -> Any:
    """The body parsed as JSON whatever the Content-Type. An empty body gives `default` (or a 400)."""
    raw = await request.read()
    if not raw.strip():
        if default is ...:
            raise BadRequest(f"{what} is empty; expected JSON")
        return default
    try:
        return json.loads(raw)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{what} is not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None


async def read_object(
    request: web.Request, *, default: Any = ..., what: str = "request body"
) -> dict[str, Any]:
    body = await read_json(request, default=default, what=what)
    if not isinstance(body, dict):
        raise BadRequest(f"{what} must be a JSON object, got {type(body).__name__}")
    return body


def field_of(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """`body[name]` checked against `kind` (bool is never accepted as a number); missing gives default."""
    if name not in body or body[name] is None:
        return default
    value = body[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise BadRequest(f"'{name}' must be {names}, got {type(value).__name__}")
    return value


def id_list(body: dict[str, Any], name: str) -> list[str]:
    values = field_of(body, name, list, [])
    if not all(isinstance(v, str) for v in values):
        raise BadRequest(f"'{name}' must be a list of prompt id strings")
    return values


def query_int(
    request: web.Request, name: str, default: int | None = None, *, minimum: int | None = None
) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter '{name}' must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise BadRequest(f"query parameter '{name}' must be >= {minimum}, got {value}")
    return value


def query_bool(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def form_bool(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def is_uuid(value: Any) -> bool:
    """A canonical lowercase, hyphenated UUID (what ComfyUI accepts as a client-chosen prompt_id)."""
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def services_of(request: web.Request) -> WebServices:
    return request.app[SERVICES]


def empty() -> web.Response:
    return web.Response(status=200)
