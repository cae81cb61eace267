"""/history: all (oldest first, `max_items`, `offset`), one prompt, clear and delete."""

from __future__ import annotations

from aiohttp import web

from .helpers import add_route, empty, field_of, id_list, query_int, read_object
from .services import WebServices


class HistoryRoutes:
    def __init__(self, services: WebServices) -> None:
        self.services = services

    async def get_all(self, request: web.Request) -> web.Response:
        max_items = query_int(request, "max_items", None, minimum=0)
        offset = query_int(request, "offset", -1)
        assert offset is not None
        return web.json_response(self.services.queue.history(max_items=max_items, offset=offset))

    async def get_one(self, request: web.Request) -> web.Response:
        return web.json_response(self.services.queue.history(request.match_info["prompt_id"]))

    async def post(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        clear = field_of(body, "clear", bool, False)
        delete = id_list(body, "delete")
        if clear:
            self.services.queue.clear_history()
        if delete:
            self.services.queue.delete_history(delete)
        return empty()


def register_history_routes(app: web.Application, services: WebServices) -> None:
    routes = HistoryRoutes(services)
    add_route(app, "GET", "/history", routes.get_all)
    add_route(app, "GET", "/history/{prompt_id}", routes.get_one)
    add_route(app, "POST", "/history", routes.post)
