"""/userdata: the user's files (saved workflows, subgraph blueprints, keybindings, user.css).

Every name is relative to the user's folder and can never leave it. `{file}` arrives URL-encoded
(`workflows%2Fa.json`); whatever is still encoded after routing is decoded once more.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from .helpers import BadRequest, add_route, query_bool, read_body
from .paths import relative_name, resolve_inside
from .services import WebServices
from .upload import atomic_write, make_folder
from .users import user_root


def _info(path: Path, relative: str) -> dict[str, Any]:
    stat = path.stat()
    return {
        "path": relative,
        "size": stat.st_size,
        "modified": int(stat.st_mtime * 1000),
        "created": int(getattr(stat, "st_birthtime", stat.st_ctime) * 1000),
    }


def _not_found(relative: PurePosixPath) -> web.Response:
    """A missing user file: 404 with a one-line text body, never JSON. The frontend asks a new user for
    files they do not have yet (user.css as a `<link rel=stylesheet>`, comfy.templates.json); Chromium
    refuses a stylesheet answered with any type but text/css and logs a console error besides the 404,
    so a missing `.css` is answered as text/css (the message as a CSS comment), everything else as
    text/plain. ComfyUI answers an empty untyped 404, which browsers take the same way."""
    message = f"user file {relative.as_posix()!r} not found"
    if relative.suffix.lower() == ".css":
        return web.Response(status=404, text=f"/* {message} */", content_type="text/css")
    return web.Response(status=404, text=message)


class UserdataRoutes:
    def __init__(self, services: WebServices) -> None:
        self.services = services

    def _path(self, raw: str, *, what: str = "file") -> tuple[Path, PurePosixPath]:
        name = unquote(raw) if "%" in raw else raw
        relative = relative_name(name, what=what)
        return resolve_inside(user_root(self.services), relative, what=what), relative

    async def list(self, request: web.Request) -> web.Response:
        directory = request.query.get("dir")
        if not directory:
            raise BadRequest("query parameter 'dir' is required")
        root = user_root(self.services)
        folder, _ = self._path(directory, what="dir")
        if not folder.is_dir():
            raise BadRequest(f"user folder {directory!r} not found", status=404)
        recurse = query_bool(request, "recurse", False)
        full_info = query_bool(request, "full_info", False)
        split = query_bool(request, "split", False)
        entries: list[Any] = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if (Path(dirpath) / d).resolve().is_relative_to(root))
            for filename in sorted(filenames):
                path = Path(dirpath) / filename
                if not path.resolve().is_relative_to(root):  # a symlink pointing out of the user folder
                    continue
                if not path.is_file():  # a dangling symlink
                    continue
                relative = path.relative_to(folder).as_posix()
                if full_info:
                    entries.append(_info(path, relative))
                elif split:
                    entries.append([relative, *relative.split("/")])
                else:
                    entries.append(relative)
            if not recurse:
                break
        return web.json_response(entries)

    async def list_v2(self, request: web.Request) -> web.Response:
        raw = request.query.get("path", "")
        relative = relative_name(raw, what="path", allow_empty=True)
        folder = resolve_inside(user_root(self.services), relative, what="path")
        if not folder.is_dir():
            raise BadRequest(f"user folder {raw!r} not found", status=404)
        out: list[dict[str, Any]] = []
        for child in sorted(folder.iterdir()):
            if not child.resolve().is_relative_to(user_root(self.services)):
                continue
            path = (relative / child.name).as_posix()
            if child.is_dir():
                out.append({"name": child.name, "path": path, "type": "directory"})
            elif not child.is_file():  # a dangling symlink
                continue
            else:
                stat = child.stat()
                out.append(
                    {
                        "name": child.name,
                        "path": path,
                        "type": "file",
                        "size": stat.st_size,
                        "modified": stat.st_mtime,
                    }
                )
        return web.json_response(out)

    async def get(self, request: web.Request) -> web.StreamResponse:
        path, relative = self._path(request.match_info["file"])
        if not path.is_file():
            return _not_found(relative)
        if relative.as_posix() == "user.css":
            return web.FileResponse(path, headers={"Content-Type": "text/css"})
        return web.FileResponse(path, headers={"Content-Disposition": f'attachment; filename="{path.name}"'})

    def _answer(self, path: Path, relative: PurePosixPath, request: web.Request) -> web.Response:
        if query_bool(request, "full_info", False):
            return web.json_response(_info(path, relative.as_posix()))
        return web.json_response(relative.as_posix())

    async def post(self, request: web.Request) -> web.Response:
        path, relative = self._path(request.match_info["file"])
        overwrite = query_bool(request, "overwrite", True)
        if path.is_dir():
            raise BadRequest(f"{relative.as_posix()!r} is a folder", status=409)
        if path.exists() and not overwrite:
            raise BadRequest(f"user file {relative.as_posix()!r} already exists", status=409)
        atomic_write(path, await read_body(request))
        return self._answer(path, relative, request)

    async def delete(self, request: web.Request) -> web.Response:
        path, relative = self._path(request.match_info["file"])
        if not path.is_file():
            raise BadRequest(f"user file {relative.as_posix()!r} not found", status=404)
        path.unlink()
        return web.Response(status=204)

    async def move(self, request: web.Request) -> web.Response:
        source, source_rel = self._path(request.match_info["file"])
        dest, dest_rel = self._path(request.match_info["dest"], what="destination")
        if not source.is_file():
            raise BadRequest(f"user file {source_rel.as_posix()!r} not found", status=404)
        if dest.exists() and not query_bool(request, "overwrite", False):
            raise BadRequest(f"user file {dest_rel.as_posix()!r} already exists", status=409)
        if dest.is_dir():
            raise BadRequest(f"{dest_rel.as_posix()!r} is a folder", status=409)
        make_folder(dest.parent)
        os.replace(source, dest)
        return self._answer(dest, dest_rel, request)


def register_userdata_routes(app: web.Application, services: WebServices) -> None:
    routes = UserdataRoutes(services)
    add_route(app, "GET", "/userdata", routes.list)
    add_route(app, "GET", "/v2/userdata", routes.list_v2)
    add_route(app, "GET", "/userdata/{file}", routes.get)
    add_route(app, "POST", "/userdata/{file}", routes.post)
    add_route(app, "DELETE", "/userdata/{file}", routes.delete)
    add_route(app, "POST", "/userdata/{file}/move/{dest}", routes.move)
