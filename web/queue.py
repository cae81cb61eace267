"""/queue (list, clear, delete pending), /interrupt (global or one prompt) and /free."""

from __future__ import annotations

from aiohttp import web

from .helpers import WORKER, add_route, empty, field_of, id_list, read_object
from .services import WebServices
from .worker import PromptWorker


class QueueRoutes:
    def __init__(self, services: WebServices, worker: PromptWorker) -> None:
        self.services = services
        self.worker = worker

    def _broadcast_status(self) -> None:
        hub = self.services.hub
        hub.dispatch([hub.status_frame(self.services.queue.remaining())])

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response(self.services.queue.listing())

    async def post(self, request: web.Request) -> web.Response:
        """`{"clear": true}` drops every pending prompt; `{"delete": [ids]}` drops those (running ones stay)."""
        body = await read_object(request)
        clear = field_of(body, "clear", bool, False)
        delete = id_list(body, "delete")
        if clear:
            self.services.queue.clear_pending()
        if delete:
            self.services.queue.delete_pending(delete)
        if clear or delete:
            self._broadcast_status()
        return empty()

    async def interrupt(self, request: web.Request) -> web.Response:
        body = await read_object(request, default={})
        prompt_id = field_of(body, "prompt_id", str)
        self.worker.interrupt(prompt_id)
        return empty()

    async def free(self, request: web.Request) -> web.Response:
        body = await read_object(request, default={})
        self.worker.request_free(
            unload_models=field_of(body, "unload_models", bool, False),
            free_memory=field_of(body, "free_memory", bool, False),
        )
        return empty()


def register_queue_routes(app: web.Application, services: WebServices) -> None:
    routes = QueueRoutes(services, app[WORKER])
    add_route(app, "GET", "/queue", routes.get)
    add_route(app, "POST", "/queue", routes.post)
    add_route(app, "POST", "/interrupt", routes.interrupt)
    add_route(app, "POST", "/free", routes.free)
