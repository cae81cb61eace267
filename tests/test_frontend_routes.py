"""The frontend routes without a browser: static root, extension listing and files, default workflow."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from web import frontend

ROOT = Path(__file__).resolve().parent.parent


def make_app(web_directories: dict[str, Path]) -> web.Application:
    app = web.Application()
    frontend.register_frontend_routes(app, SimpleNamespace(web_directories=web_directories))
    return app


async def fetch(app: web.Application, *paths: str) -> list[tuple[int, dict[str, str], bytes]]:
    async with TestClient(TestServer(app)) as client:
        out = []
        for path in paths:
            response = await client.get(path)
            out.append((response.status, dict(response.headers), await response.read()))
        return out


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    web_dir = tmp_path / "pack_web"
    (web_dir / "sub").mkdir(parents=True)
    (web_dir / "a.js").write_text("export const a = 1;\n")
    (web_dir / "sub" / "b.js").write_text("export const b = 2;\n")
    (web_dir / "style.css").write_text("body {}\n")
    (tmp_path / "secret.txt").write_text("do not serve\n")
    (web_dir / "link.txt").symlink_to(tmp_path / "secret.txt")
    return web_dir


def test_extensions_list_and_files(pack, tmp_path):
    core = tmp_path / "core_web"
    core.mkdir()
    (core / "evil.js").write_text("alert(1)\n")
    app = make_app({"my pack": pack, "core": core})
    (listing, api_listing, ours, pack_js, css, escape, link, core_file) = asyncio.run(
        fetch(
            app,
            "/extensions",
            "/api/extensions",
            "/extensions/fluxloom/fluxloom.js",
            "/extensions/my%20pack/sub/b.js",
            "/extensions/my%20pack/style.css",
            "/extensions/my%20pack/%2e%2e/secret.txt",
            "/extensions/my%20pack/link.txt",
            "/extensions/core/evil.js",
        )
    )
    ours_files = sorted(p.name for p in frontend.EXTENSIONS_DIR.glob("*.js"))
    expected = [f"/extensions/fluxloom/{name}" for name in ours_files] + [
        "/extensions/my%20pack/a.js",
        "/extensions/my%20pack/sub/b.js",
    ]
    assert listing[0] == api_listing[0] == 200
    assert json.loads(listing[2]) == json.loads(api_listing[2]) == expected
    assert ours[0] == 200 and ours[2] == (frontend.EXTENSIONS_DIR / "fluxloom.js").read_bytes()
    assert "javascript" in ours[1]["Content-Type"]
    assert pack_js[:1] == (200,) and pack_js[2] == b"export const b = 2;\n"
    assert css[0] == 200  # every file of a WEB_DIRECTORY is served, only .js files are listed
    assert escape[0] in (403, 404) and b"do not serve" not in escape[2]
    assert link[0] == 404  # a symlink out of the folder is not followed
    assert b"alert" not in core_file[2]  # a pack cannot take over the frontend's /extensions/core


def test_static_root_and_default_workflow(pack):
    if frontend.frontend_static_dir() is None:
        pytest.skip("comfyui-frontend-package is not installed")
    app = make_app({})
    index, shim, core_ext, missing, api_missing, workflow, css = asyncio.run(
        fetch(
            app,
            "/",
            "/scripts/app.js",
            "/extensions/core/widgetInputs.js",
            "/assets/no-such-file.js",
            "/api/no_such_route",
            "/api/fluxloom/default_workflow",
            "/user.css",
        )
    )
    assert index[0] == 200 and b"<html" in index[2] and "no-store" in index[1]["Cache-Control"]
    assert shim[0] == 200 and b"window.comfyAPI.app" in shim[2]
    assert core_ext[0] == 200 and b"window.comfyAPI" in core_ext[2]  # legacy extension imports keep working
    assert missing[0] == 404 and api_missing[0] == 404
    assert workflow[0] == 200
    assert json.loads(workflow[2]) == json.loads((ROOT / "workflows" / "default_flux.json").read_text())
    assert css[0] == 200 and css[1]["Content-Type"].startswith("text/css")


def test_without_the_frontend_package_the_root_explains(monkeypatch):
    monkeypatch.setattr(frontend, "frontend_static_dir", lambda: None)
    ((status, _, body),) = asyncio.run(fetch(make_app({}), "/"))
    assert status == 503 and b"comfyui-frontend-package" in body
