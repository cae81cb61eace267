"""Middlewares: optional bearer token, ComfyUI's Origin check on loopback, headers, typed error answers.

The Origin check mirrors ComfyUI: a browser request to a loopback Host whose Origin names another
host:port gets 403, so a web page cannot drive a local server. A server bound to loopback also refuses
Host names that are not loopback (DNS rebinding). With `--auth-token`, every request needs
`Authorization: Bearer <token>`, `?token=<token>` or the cookie set after a `?token=` visit (the
browser UI cannot add headers to its asset and WebSocket requests).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from aiohttp import web
from yarl import URL

from .helpers import BadRequest, Handler
from .services import WebServices

log = logging.getLogger(__name__)

TOKEN_COOKIE = "fluxloom_token"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(netloc: str) -> str | None:
    try:
        return URL(f"http://{netloc}").host
    except ValueError:
        return None


def _same_origin(origin: str, host: str, scheme: str) -> bool:
    try:
        source, target = URL(origin), URL(f"{scheme}://{host}")
    except ValueError:
        return False
    if not source.host or not target.host:
        return False
    return (source.host.lower(), source.port) == (target.host.lower(), target.port)


def _forbidden(message: str) -> web.Response:
    return web.json_response({"error": message}, status=403)


def make_security_middleware(services: WebServices):  # noqa: ANN201 - aiohttp middleware
    token = services.settings.auth_token
    bound_to_loopback = is_loopback(services.settings.listen)

    @web.middleware
    async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        host_name = _host_of(host)
        if bound_to_loopback and host and not is_loopback(host_name):
            return _forbidden(f"Host {host!r} is not allowed on a server bound to {services.settings.listen}")
        origin = request.headers.get("Origin")
        if origin is not None and is_loopback(host_name) and not _same_origin(origin, host, request.scheme):
            log.warning(
                "refused %s %s: Origin %s does not match Host %s", request.method, request.path, origin, host
            )
            return _forbidden(f"cross-origin request refused: Origin {origin} does not match Host {host}")
        set_cookie = False
        if token:
            supplied = _supplied_token(request)
            if supplied is None or not hmac.compare_digest(supplied.encode(), token.encode()):
                return web.json_response(
                    {
                        "error": "unauthorized: this server needs its auth token "
                        "(Authorization: Bearer <token> or ?token=<token>)"
                    },
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            set_cookie = request.query.get("token") is not None and request.cookies.get(TOKEN_COOKIE) != token
        response = await handler(request)
        if set_cookie and not response.prepared:
            response.set_cookie(TOKEN_COOKIE, token or "", httponly=True, samesite="Strict")
        return response

    return security


def _supplied_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query.get("token") or request.cookies.get(TOKEN_COOKIE)


@web.middleware
async def errors_and_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """BadRequest -> its JSON answer; unexpected errors -> logged JSON 500; caching/nosniff headers."""
    try:
        response = await handler(request)
    except BadRequest as exc:
        response = exc.response()
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        response = web.json_response({"error": f"internal error: {type(exc).__name__}: {exc}"}, status=500)
    if not response.prepared:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.path.endswith((".js", ".css")):
            response.headers.setdefault("Cache-Control", "no-cache")
    return response
