"""The aiohttp application factory: middlewares, every route module, the worker and hub lifecycles."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .frontend import register_frontend_routes
from .helpers import SERVICES, WORKER
from .history import register_history_routes
from .internal import register_internal_routes
from .jobs import register_job_routes
from .object_info import register_object_info_routes
from .packs import register_pack_routes
from .prompt import register_prompt_routes
from .queue import register_queue_routes
from .security import errors_and_headers, exposure_warning, make_security_middleware
from .services import WebServices
from .system import register_system_routes
from .upload import register_upload_routes
from .userdata import register_userdata_routes
from .users import register_user_routes
from .view import register_view_routes
from .worker import PromptWorker
from .ws import register_ws_routes

log = logging.getLogger(__name__)

# API routes first: the frontend's static mount at "/" must come last so it never shadows them.
ROUTE_MODULES = (
    register_ws_routes,
    register_prompt_routes,
    register_queue_routes,
    register_job_routes,
    register_history_routes,
    register_object_info_routes,
    register_view_routes,
    register_upload_routes,
    register_user_routes,
    register_userdata_routes,
    register_system_routes,
    register_internal_routes,
    register_pack_routes,
    register_frontend_routes,
)


def create_app(services: WebServices, *, start_worker: bool = True) -> web.Application:
    """The web app. The worker thread starts with the app and stops (re-queuing its prompt) with it.

    `start_worker=False` serves the API without executing anything (tests of the queue routes).
    """
    app = web.Application(
        client_max_size=services.max_upload_bytes,
        middlewares=[make_security_middleware(services), errors_and_headers],
    )
    worker = PromptWorker(
        services.executor,
        services.queue,
        services.hub,
        free_models=services.free_models,
        progress_interval_s=services.progress_interval_s,
        state_interval_s=services.state_interval_s,
    )
    app[SERVICES] = services
    app[WORKER] = worker
    for register in ROUTE_MODULES:
        register(app, services)

    async def start(_app: web.Application) -> None:
        warning = exposure_warning(services.settings)
        if warning:
            log.warning(warning)
        services.hub.attach(asyncio.get_running_loop())
        if start_worker:
            worker.start()

    async def close_sockets(_app: web.Application) -> None:
        await services.hub.close_all()

    async def stop(_app: web.Application) -> None:
        await asyncio.to_thread(worker.stop)
        services.hub.detach()

    app.on_startup.append(start)
    app.on_shutdown.append(close_sockets)
    app.on_cleanup.append(stop)
    return app
