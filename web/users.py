"""/users and /settings. Single-user server: every request belongs to the user "default", whose files
live in `<user_dir>/default/` (settings in `comfy.settings.json`, written atomically)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from .helpers import BadRequest, add_route, empty, read_json, read_object
from .services import WebServices
from .upload import atomic_write

log = logging.getLogger(__name__)

DEFAULT_USER = "default"
SETTINGS_FILE = "comfy.settings.json"


def user_root(services: WebServices) -> Path:
    """The current user's folder (created on first use)."""
    root = Path(services.settings.user_dir).resolve() / DEFAULT_USER
    root.mkdir(parents=True, exist_ok=True)
    return root


class SettingsStore:
    """The user's settings object, read from and written to one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            # NaN/Infinity written by older versions are read back as null: the answer must stay JSON.
            data = json.loads(self.path.read_text(encoding="utf-8"), parse_constant=lambda _name: None)
        except FileNotFoundError:
            return {}
        except (ValueError, RecursionError) as exc:
            log.warning("%s is not valid JSON (%s); starting from empty settings", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, data: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(data, indent=2).encode())


class UserRoutes:
    def __init__(self, services: WebServices) -> None:
        self.services = services

    def _store(self) -> SettingsStore:
        return SettingsStore(user_root(self.services) / SETTINGS_FILE)

    async def users(self, request: web.Request) -> web.Response:
        return web.json_response({"storage": "server", "migrated": True})

    async def create_user(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        if not isinstance(body.get("username"), str) or not body["username"].strip():
            raise BadRequest("'username' must be a non-empty string")
        raise BadRequest("this server runs in single-user mode; users cannot be created")

    async def get_settings(self, request: web.Request) -> web.Response:
        return web.json_response(self._store().load())

    async def get_setting(self, request: web.Request) -> web.Response:
        return web.json_response(self._store().load().get(request.match_info["setting_id"]))

    async def post_settings(self, request: web.Request) -> web.Response:
        body = await read_object(request, what="settings")
        store = self._store()
        store.save({**store.load(), **body})
        return empty()

    async def post_setting(self, request: web.Request) -> web.Response:
        value = await read_json(request, default=None, what="setting value")
        store = self._store()
        store.save({**store.load(), request.match_info["setting_id"]: value})
        return empty()


def register_user_routes(app: web.Application, services: WebServices) -> None:
    routes = UserRoutes(services)
    add_route(app, "GET", "/users", routes.users)
    add_route(app, "POST", "/users", routes.create_user)
    add_route(app, "GET", "/settings", routes.get_settings)
    add_route(app, "POST", "/settings", routes.post_settings)
    add_route(app, "GET", "/settings/{setting_id}", routes.get_setting)
    add_route(app, "POST", "/settings/{setting_id}", routes.post_setting)
