"""Middlewares: Host and Origin checks, optional bearer token, headers, typed error answers.

Every request needs a Host header naming this server: a loopback name, or, on a server listening
beyond loopback, an IP literal, this machine's name, the `--listen` name or a `--allow-host` name.
Any other name is refused (403), which defeats DNS rebinding. A browser request whose Origin is not
the Host it was sent to gets 403 whatever the Host (ComfyUI checks this on loopback only), as does
a state-changing request the browser marks `Sec-Fetch-Site: cross-site`/`same-site`, and a JSON
route body sent as text/plain or a form by a page of another origin (the content types a page may
send without a CORS preflight). With `--auth-token`, every request needs
`Authorization: Bearer <token>`, `?token=<token>` or the cookie set after a `?token=` visit (the
browser UI cannot add headers to its asset and WebSocket requests). Compressed request bodies
(any Content-Encoding but identity) get 415: no client of ours sends them, and refusing them keeps
decompression bombs and undecodable bodies out of the server.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import logging
import socket
from pathlib import Path

from aiohttp import web
from yarl import URL

from settings import Settings

from .helpers import SERVICES, BadRequest, Handler, clip
from .services import WebServices

log = logging.getLogger(__name__)

TOKEN_COOKIE = "fluxloom_token"
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::", "*")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Content types a web page can send cross-origin without a CORS preflight.
SIMPLE_CONTENT_TYPES = frozenset(
    {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""}
)
# Routes whose bodies are read as JSON whatever their content type.
_UPLOAD_PREFIXES = ("/upload/", "/api/upload/")


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


def is_ip_literal(host: str | None) -> bool:
    if not host:
        return False
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def listens_beyond_loopback(settings: Settings) -> bool:
    return not is_loopback(settings.listen)


def served_host_names(settings: Settings) -> frozenset[str]:
    """Names (lowercase) a network-facing server answers to besides loopback names and IP literals."""
    names = {h.strip().lower().rstrip(".") for h in settings.allowed_hosts if h.strip()}
    if settings.listen not in WILDCARD_ADDRESSES and not is_ip_literal(settings.listen):
        names.add(settings.listen.lower())
    if listens_beyond_loopback(settings):
        machine = socket.gethostname().lower()
        if machine:
            names |= {machine, f"{machine}.local", machine.split(".")[0]}
    return frozenset(names)


def exposure_warning(settings: Settings) -> str | None:
    """The loud warning for a server reachable from the network without a token (None otherwise)."""
    if not listens_beyond_loopback(settings) or settings.auth_token:
        return None
    where = "every network interface" if settings.listen in WILDCARD_ADDRESSES else settings.listen
    return (
        f"WARNING: listening on {where} (port {settings.port}) WITHOUT --auth-token: anyone who can "
        "reach this machine over the network can queue prompts, read your images and write files in "
        "your input and user folders. Pass --auth-token <secret> (or --listen 127.0.0.1) to close it."
    )


def _host_of(netloc: str) -> str | None:
    try:
        return URL(f"http://{netloc}").host
    except ValueError:
        return None


def _same_origin(origin: str, host: str) -> bool:
    """Origin `scheme://name[:port]` names the same host and explicit port as the Host header."""
    try:
        source, target = URL(origin), URL(f"http://{host}")
    except ValueError:
        return False
    if not source.host or not target.host or source.scheme not in ("http", "https"):
        return False
    return (source.host.lower(), source.explicit_port) == (target.host.lower(), target.explicit_port)


def _forbidden(message: str) -> web.Response:
    return web.json_response({"error": message}, status=403)


def make_security_middleware(services: WebServices):  # noqa: ANN201 - aiohttp middleware
    settings = services.settings
    token = settings.auth_token
    beyond_loopback = listens_beyond_loopback(settings)
    names = served_host_names(settings)

    def host_served(host_name: str | None) -> bool:
        if is_loopback(host_name):
            return True
        if not beyond_loopback or not host_name:
            return False
        return is_ip_literal(host_name) or host_name.lower().rstrip(".") in names

    @web.middleware
    async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host", "").strip()
        if not host:
            return web.json_response({"error": "the request has no Host header"}, status=400)
        host_name = _host_of(host)
        if not host_served(host_name):
            log.warning(
                "refused %s %s: Host %s is not served here", request.method, request.path, clip(host, 100)
            )
            return _forbidden(
                f"Host {clip(host, 100)!r} is not a name this server answers to "
                f"(listening on {settings.listen}; add it with --allow-host)"
            )
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            refusal = web.json_response(
                {
                    "error": f"request bodies with Content-Encoding {clip(encoding, 40)!r} are not accepted; "
                    "send the body uncompressed"
                },
                status=415,
            )
            refusal.force_close()
            return refusal
        origin = request.headers.get("Origin")
        if origin is not None and not _same_origin(origin, host):
            log.warning(
                "refused %s %s: Origin %s does not match Host %s",
                request.method,
                request.path,
                clip(origin, 100),
                clip(host, 100),
            )
            return _forbidden(
                f"cross-origin request refused: Origin {clip(origin, 100)} does not match Host {clip(host, 100)}"
            )
        if request.method not in SAFE_METHODS:
            site = request.headers.get("Sec-Fetch-Site", "").lower()
            if site in ("cross-site", "same-site"):
                return _forbidden(f"cross-origin request refused: the browser marks it {site}")
            referer = request.headers.get("Referer")
            if (
                origin is None
                and referer
                and request.content_type in SIMPLE_CONTENT_TYPES
                and not request.path.startswith(_UPLOAD_PREFIXES)
                and not _same_origin(referer, host)
            ):
                return _forbidden(
                    f"cross-origin request refused: a {request.content_type or 'untyped'} body "
                    f"from {clip(referer, 100)}"
                )
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


def _relative_paths(text: str, request: web.Request) -> str:
    """`text` with the server's absolute folders replaced by their names (errors never show them)."""
    settings = request.app[SERVICES].settings
    folders = (
        settings.input_dir,
        settings.output_dir,
        settings.temp_dir,
        settings.user_dir,
        settings.models_dir,
        settings.custom_nodes_dir,
    )
    for folder in folders:
        for form in {str(Path(folder)), str(Path(folder).resolve())}:
            if form not in (".", "/") and Path(form).is_absolute():
                text = text.replace(form, f"<{Path(form).name}>")
    return text


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
        if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
            response = web.json_response(
                {"error": "a file or folder name in the request is too long"}, status=400
            )
        else:
            log.exception("%s %s failed", request.method, clip(request.path, 200))
            text = f"internal error: {type(exc).__name__}: {clip(_relative_paths(str(exc), request), 300)}"
            response = web.json_response({"error": text}, status=500)
    if not response.prepared:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.path.endswith((".js", ".css")):
            response.headers.setdefault("Cache-Control", "no-cache")
    return response
