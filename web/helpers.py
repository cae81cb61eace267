"""Request helpers shared by the route modules: dual /api registration, strict JSON, typed 400s.

JSON bodies are read strictly: at most `MAX_JSON_BYTES`, nested at most `MAX_JSON_DEPTH` deep, no
`NaN`/`Infinity` (nor numbers that overflow to them), no integer literals longer than
`MAX_INT_DIGITS`, no unpaired UTF-16 surrogates. Every refusal is a 4xx naming what is wrong. Bodies
are read with an idle timeout (`Settings.request_body_timeout_s`): a body that stops arriving is 408.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from .services import WebServices
from .worker import PromptWorker

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVICES = web.AppKey("services", WebServices)
WORKER = web.AppKey("worker", PromptWorker)

MAX_JSON_BYTES = 32 << 20
MAX_JSON_DEPTH = 100
MAX_INT_DIGITS = 64
INLINE_PARSE_BYTES = 1 << 20
LOG_VALUE_CHARS = 300
T = TypeVar("T")


class BadRequest(Exception):
    """A client error: answered with `status` and `{"error": message}` (or `body` when given)."""

    def __init__(self, message: str, *, status: int = 400, body: Any = None, close: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body
        self.close = close  # drop the connection after answering (its request body was not read)

    def response(self) -> web.Response:
        body = self.body if self.body is not None else {"error": self.message}
        response = web.json_response(body, status=self.status)
        if self.close:
            response.force_close()
        return response


def add_route(app: web.Application, method: str, path: str, handler: Handler, *, bare: bool = True) -> None:
    """Register `path` under `/api` and, unless `bare` is False, without the prefix (as ComfyUI does)."""
    app.router.add_route(method, "/api" + path, handler)
    if bare:
        app.router.add_route(method, path, handler)


def clip(value: Any, limit: int = LOG_VALUE_CHARS) -> str:
    """`value` as text, cut to `limit` characters with a count of what was left out (for logs and errors)."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class _Refused(ValueError):
    """A JSON token strict parsing does not accept (raised from the json module's hooks)."""


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number (NaN and Infinity are not allowed)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {clip(text, 40)} is out of range for a 64-bit float")
    return value


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {digits} digits is too long (at most {MAX_INT_DIGITS})")
    return int(text)


_CONTAINERS = (dict, list)


def nesting_depth(value: Any, limit: int) -> int:
    """How deep lists/dicts nest in a parsed JSON value, counting at most to `limit` + 1.

    Level by level rather than recursive: no stack to overflow, and a list comprehension per
    container is the cheapest walk in CPython (~2 µs per node of a prompt)."""
    level = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level and depth <= limit:
        depth += 1
        below: list[Any] = []
        for item in level:
            below += [c for c in (item.values() if type(item) is dict else item) if type(c) in _CONTAINERS]
        level = below
    return depth


def parse_json(raw: bytes | str, *, what: str = "request body", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Strict JSON (see module docstring). Raises BadRequest (400) naming `what` and the problem."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{what} is not UTF-8 text: {exc}") from None
    try:
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int
        )
    except _Refused as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:  # the parser's own limit, far above ours: refused before any walk below
        raise BadRequest(f"{what} nests arrays/objects too deeply") from None
    except ValueError as exc:  # e.g. the interpreter's own integer digit limit
        raise BadRequest(f"{what} is not valid JSON: {clip(str(exc), 200)}") from None
    depth = nesting_depth(value, max_depth)
    if depth > max_depth:
        raise BadRequest(
            f"{what} nests arrays/objects more than {max_depth} levels deep; at most {max_depth} are allowed"
        )
    if "\\u" in text:  # only escapes can produce unpaired surrogates
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(
                f"{what} contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), "
                "which is not Unicode text"
            ) from None
    return value


async def within_body_timeout(request: web.Request, work: Awaitable[T]) -> T:
    """Await `work` (which reads the body), answering 408 when no body bytes arrive for the timeout."""
    timeout = request.app[SERVICES].settings.request_body_timeout_s
    task = asyncio.ensure_future(work)
    try:
        seen = getattr(request.content, "total_bytes", 0)
        while True:
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if done:
                try:
                    return task.result()
                except (RequestPayloadError, HttpProcessingError) as exc:  # e.g. a bad Content-Encoding
                    cause = exc.__cause__ or exc
                    text = getattr(cause, "message", None) or str(cause)
                    raise BadRequest(
                        f"the request body cannot be read: {clip(text.strip(), 200)}", close=True
                    ) from None
            progress = getattr(request.content, "total_bytes", 0)
            if progress == seen:
                raise BadRequest(
                    f"the request body stopped arriving: no data for {timeout:g} s", status=408, close=True
                )
            seen = progress
    finally:
        if not task.done():
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001 - the read was abandoned; its error does not matter
                pass


async def read_body(request: web.Request, *, limit: int | None = None, what: str = "request body") -> bytes:
    """The whole body (idle timeout; 413 past `limit` or the app's client_max_size)."""
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise BadRequest(
            f"{what} is {request.content_length} bytes; at most {limit} are accepted", status=413
        )
    raw = await within_body_timeout(request, request.read())
    if limit is not None and len(raw) > limit:
        raise BadRequest(f"{what} is {len(raw)} bytes; at most {limit} are accepted", status=413)
    return raw


async def read_json(request: web.Request, *, default: Any = ..., what: str = "request body") -> Any:
    """The body parsed as strict JSON whatever the Content-Type. An empty body gives `default` (or a 400)."""
    raw = await read_body(request, limit=MAX_JSON_BYTES, what=what)
    if not raw.strip():
        if default is ...:
            raise BadRequest(f"{what} is empty; expected JSON")
        return default
    if len(raw) > INLINE_PARSE_BYTES:  # a big body is parsed on a worker thread: the server keeps answering
        return await asyncio.to_thread(parse_json, raw, what=what)
    return parse_json(raw, what=what)


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
    request: web.Request,
    name: str,
    default: int | None = None,
    *,
    minimum: int | None = -(2**63),
    maximum: int = 2**63 - 1,
) -> int | None:
    """An integer query parameter within [minimum, maximum] (64-bit by default: SQLite's range)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if len(raw) <= 40 else None
    except ValueError:
        value = None
    if value is None:
        raise BadRequest(f"query parameter '{name}' must be an integer, got {clip(repr(raw), 60)}")
    low = -(2**63) if minimum is None else minimum
    if not low <= value <= maximum:
        raise BadRequest(f"query parameter '{name}' must be between {low} and {maximum}, got {clip(raw, 60)}")
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
