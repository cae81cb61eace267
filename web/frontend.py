"""The canvas: the official frontend's static files at `/`, our extension JS, packs' WEB_DIRECTORY files.

- `/` serves `index.html` and the rest of `comfyui-frontend-package`'s `static/` directory;
- `GET /extensions` (and `/api/extensions`) lists the extension modules the frontend imports:
  ours from `web/extensions/` as `/extensions/fluxloom/<file>.js`, then each pack's under
  `/extensions/<pack>/` (only `.js` files are listed; every file of the folder is served);
- `GET /api/fluxloom/default_workflow` is the UI-format graph a first-time user sees
  (`workflows/default_flux.json`); `web/extensions/fluxloom.js` installs it as the frontend's default.

`create_app` registers these routes last: the static mount at `/` answers every path not matched before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from .helpers import add_route
from .services import WebServices

log = logging.getLogger(__name__)

EXTENSIONS_DIR = Path(__file__).resolve().parent / "extensions"
DEFAULT_WORKFLOW = Path(__file__).resolve().parent.parent / "workflows" / "default_flux.json"
OUR_PACK = "fluxloom"
# Names whose URL space the frontend or we already use.
RESERVED_PACKS = frozenset({OUR_PACK, "core"})
NO_STORE = {"Cache-Control": "no-store, must-revalidate", "Pragma": "no-cache", "Expires": "0"}


def frontend_static_dir() -> Path | None:
    """The installed frontend package's `static/` directory, or None when it is not installed."""
    try:
        import comfyui_frontend_package
    except ImportError:
        return None
    root = Path(comfyui_frontend_package.__file__).resolve().parent / "static"
    return root if (root / "index.html").is_file() else None


def _js_files(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*.js") if p.is_file())


def safe_file(root: Path, relative: str) -> Path | None:
    """`root/relative` when it is a file inside `root` (no `..`, absolute parts, NUL or symlinks out)."""
    if "\x00" in relative or "\\" in relative or relative.startswith("/"):
        return None
    try:
        base = root.resolve()
        path = (base / relative).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return path if path.is_relative_to(base) and path.is_file() else None


def extension_urls(web_directories: Mapping[str, Path], ours: Path = EXTENSIONS_DIR) -> list[str]:
    """What `GET /extensions` answers: our modules first, then each pack's, as URL paths."""
    urls = [f"/extensions/{OUR_PACK}/{quote(name)}" for name in _js_files(ours)]
    for pack, directory in sorted(web_directories.items()):
        if pack in RESERVED_PACKS:
            continue
        urls += [f"/extensions/{quote(pack)}/{quote(name)}" for name in _js_files(Path(directory))]
    return urls


def register_frontend_routes(app: web.Application, services: WebServices) -> None:
    """Our extension routes, each pack's WEB_DIRECTORY, then the frontend at `/` (last: it catches all)."""
    web_directories: dict[str, Path] = {}
    for pack, directory in services.web_directories.items():
        if pack in RESERVED_PACKS:
            log.warning(
                "pack %r: its name is reserved for /extensions/%s; its web files are not served", pack, pack
            )
        else:
            web_directories[pack] = Path(directory)

    async def list_extensions(_request: web.Request) -> web.Response:
        return web.json_response(extension_urls(web_directories))

    async def default_workflow(_request: web.Request) -> web.Response:
        try:
            return web.json_response(json.loads(DEFAULT_WORKFLOW.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            log.error("default workflow %s unreadable: %s", DEFAULT_WORKFLOW, exc)
            return web.json_response({"error": f"default workflow unavailable: {exc}"}, status=404)

    async def empty_user_css(_request: web.Request) -> web.Response:
        # index.html links `user.css` next to the page; the user's own CSS comes from /api/userdata.
        return web.Response(text="", content_type="text/css", headers=NO_STORE)

    add_route(app, "GET", "/extensions", list_extensions)
    app.router.add_get("/user.css", empty_user_css)
    add_route(app, "GET", f"/{OUR_PACK}/default_workflow", default_workflow, bare=False)
    for pack, directory in sorted(web_directories.items()):
        if not directory.is_dir():
            log.warning("pack %r: WEB_DIRECTORY %s is not a folder; not served", pack, directory)
    static = frontend_static_dir()
    # One dynamic route rather than a static mount per pack: pack names may hold spaces, which
    # aiohttp's static prefixes do not match. Anything else under /extensions is the frontend's own.
    roots = {OUR_PACK: EXTENSIONS_DIR, **web_directories}

    async def extension_file(request: web.Request) -> web.FileResponse:
        pack, relative = request.match_info["pack"], request.match_info["path"]
        root = roots.get(pack)
        if root is None and static is not None:
            root = static / "extensions" / pack
        found = safe_file(root, relative) if root is not None else None
        if found is None:
            raise web.HTTPNotFound()
        return web.FileResponse(found)

    app.router.add_get("/extensions/{pack}/{path:.+}", extension_file)

    if static is None:
        log.warning("comfyui-frontend-package is not installed: the web UI is off (the API still works)")

        async def no_frontend(_request: web.Request) -> web.Response:
            return web.Response(
                status=503,
                text="The web UI needs comfyui-frontend-package: pip install -r requirements.txt\n",
            )

        app.router.add_get("/", no_frontend)
        return

    async def index(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(static / "index.html", headers=NO_STORE)

    app.router.add_get("/", index)
    app.router.add_static("/", static)
