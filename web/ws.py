"""/ws?clientId=: the realtime socket. First frame: `status` with the client's `sid`; the client's first
message may declare feature flags, answered with ours; every later client message is ignored."""

from __future__ import annotations

import json
import logging
import uuid

from aiohttp import WSMsgType, web

from executor import messages

from .helpers import WORKER
from .hub import json_frame
from .services import WebServices
from .system import server_features
from .worker import PromptWorker

log = logging.getLogger(__name__)


class SocketRoutes:
    def __init__(self, services: WebServices, worker: PromptWorker) -> None:
        self.services = services
        self.worker = worker

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1 << 20)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        hub = self.services.hub
        client = hub.connect(sid, ws, request.transport)
        frames = [hub.status_frame(self.services.queue.remaining(), sid)]
        node = self.worker.running_node(sid)
        if node is not None:
            frames.append(json_frame(*messages.executing_resumed(node)))
        hub.dispatch(frames, sid)
        first = True
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT or not first:
                    continue
                first = False
                self._first_message(sid, message.data)
        finally:
            hub.disconnect(client)
        return ws

    def _first_message(self, sid: str, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            log.debug("websocket %s sent a non-JSON first message", sid)
            return
        if not isinstance(message, dict) or message.get("type") != "feature_flags":
            return
        client = self.services.hub.clients.get(sid)
        data = message.get("data")
        if client is not None and isinstance(data, dict):
            client.features = data
        self.services.hub.send("feature_flags", server_features(self.services), sid)


def register_ws_routes(app: web.Application, services: WebServices) -> None:
    routes = SocketRoutes(services, app[WORKER])
    app.router.add_get("/ws", routes.socket)
    app.router.add_get("/api/ws", routes.socket)
