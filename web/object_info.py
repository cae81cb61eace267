"""/object_info: every node definition, or one by class name ({} when unknown)."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from executor.object_info import node_type_info, object_info

from .helpers import add_route
from .services import WebServices

log = logging.getLogger(__name__)


class ObjectInfoRoutes:
    def __init__(self, services: WebServices) -> None:
        self.services = services

    async def all(self, request: web.Request) -> web.Response:
        info = object_info(self.services.registry, self.services.node_services)
        return web.Response(text=json.dumps(info, default=str), content_type="application/json")

    async def one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        node_type = self.services.registry.get(name)
        if node_type is None:
            return web.json_response({})
        try:
            info = node_type_info(node_type, self.services.node_services)
        except Exception:  # a broken pack node is skipped, as in the full listing
            log.exception("describing node %r failed", name)
            return web.json_response({})
        return web.Response(text=json.dumps({name: info}, default=str), content_type="application/json")


def register_object_info_routes(app: web.Application, services: WebServices) -> None:
    routes = ObjectInfoRoutes(services)
    add_route(app, "GET", "/object_info", routes.all)
    add_route(app, "GET", "/object_info/{node_class}", routes.one)
