"""/prompt (GET status, POST an API-format prompt) and /workflow/run (ours: a UI-format workflow)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import uuid
from typing import Any

from aiohttp import web

from executor.errors import PromptValidationError
from executor.history import prompt_text
from executor.messages import now_ms

from .helpers import BadRequest, add_route, clip, field_of, is_uuid, read_object
from .services import WebServices

log = logging.getLogger(__name__)

# Prompts with more nodes than this are validated (and converted) on a worker thread, so the server
# keeps answering other clients meanwhile; small ones are validated inline (cheaper than a thread hop).
INLINE_VALIDATION_NODES = 64
# Queue numbers are stored as 64-bit floats: beyond 2**53 they would no longer be exact.
MAX_QUEUE_NUMBER = 2**53


def _error(kind: str, message: str, details: str = "") -> BadRequest:
    body = {
        "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
        "node_errors": {},
    }
    return BadRequest(message, body=body)


class PromptRoutes:
    def __init__(self, services: WebServices) -> None:
        self.services = services

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": self.services.queue.remaining()}})

    async def post(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        if self.services.on_prompt is not None:  # node packs' PromptServer.add_on_prompt_handler
            body = self.services.on_prompt(body)
        if "prompt" not in body or body["prompt"] is None:
            raise _error("no_prompt", "No prompt provided", "the body needs a 'prompt' object (API format)")
        return await self.enqueue(body, body["prompt"])

    async def run_workflow(self, request: web.Request) -> web.Response:
        """POST /workflow/run: `{"workflow": <UI workflow>, client_id?, prompt_id?, ...}` or the workflow itself."""
        body = await read_object(request)
        workflow = body.get("workflow", body if "nodes" in body else None)
        if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
            raise BadRequest("expected a UI-format workflow (an object with a 'nodes' list) in 'workflow'")
        try:
            converter = importlib.import_module("executor.workflow")
        except ImportError:
            raise BadRequest("UI-format workflows cannot be converted by this build", status=501) from None

        def convert() -> Any:
            return converter.ui_to_api(workflow, self.services.registry, services=self.services.node_services)

        try:
            if len(workflow["nodes"]) > INLINE_VALIDATION_NODES:
                prompt = await asyncio.to_thread(convert)
            else:
                prompt = convert()
        except PromptValidationError as exc:
            raise BadRequest(str(exc), body=exc.as_response()) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise _error(
                "invalid_workflow", "The workflow cannot be converted", clip(str(exc), 1000)
            ) from None
        request_body = {k: v for k, v in body.items() if k != "workflow"} if "workflow" in body else {}
        extra = field_of(request_body, "extra_data", dict, {})
        pnginfo = field_of(extra, "extra_pnginfo", dict, {})
        request_body["extra_data"] = {**extra, "extra_pnginfo": {**pnginfo, "workflow": workflow}}
        return await self.enqueue(request_body, prompt)

    async def enqueue(self, body: dict[str, Any], prompt: Any) -> web.Response:
        """Validate and queue; answers ComfyUI's `{prompt_id, number, node_errors}` or its 400 shape."""
        prompt_id = body.get("prompt_id")
        if prompt_id is None:
            prompt_id = str(uuid.uuid4())
        elif not is_uuid(prompt_id):
            raise _error(
                "invalid_prompt_id",
                "Invalid prompt_id",
                f"prompt_id must be a lowercase hyphenated UUID, got {clip(repr(prompt_id), 100)}",
            )
        number = field_of(body, "number", (int, float))
        if number is not None and not abs(number) <= MAX_QUEUE_NUMBER:
            raise BadRequest(f"'number' must be between -2**53 and 2**53, got {clip(repr(number), 40)}")
        front = field_of(body, "front", bool, False)
        client_id = field_of(body, "client_id", str, None)
        extra_data = dict(field_of(body, "extra_data", dict, {}))
        targets = field_of(body, "partial_execution_targets", list)
        if targets is not None and not all(isinstance(t, (str, int)) for t in targets):
            raise BadRequest("'partial_execution_targets' must be a list of node id strings")
        wanted = None if targets is None else [str(t) for t in targets]
        validate = self.services.executor.validate
        text = prompt_text(prompt)  # one serialisation: the validation memo key and the queue's stored text
        try:
            if isinstance(prompt, dict) and len(prompt) > INLINE_VALIDATION_NODES:
                validated = await asyncio.to_thread(validate, prompt, wanted, text=text)
            else:
                validated = validate(prompt, wanted, text=text)
        except PromptValidationError as exc:
            log.info("prompt refused: %s", clip(str(exc), 500))
            raise BadRequest(clip(str(exc), 500), body=exc.as_response()) from None
        if client_id:
            extra_data["client_id"] = client_id
        extra_data["create_time"] = now_ms()
        try:
            queued = self.services.queue.put(
                prompt_id, number, prompt, extra_data, validated.outputs, front=front, prompt_text=text
            )
        except ValueError as exc:  # the client reused an id that is still queued
            raise _error("invalid_prompt_id", "Invalid prompt_id", str(exc)) from None
        hub = self.services.hub
        hub.dispatch([hub.status_frame(queued.remaining)])
        return web.json_response(
            {"prompt_id": prompt_id, "number": queued.number, "node_errors": validated.node_errors}
        )


def register_prompt_routes(app: web.Application, services: WebServices) -> None:
    routes = PromptRoutes(services)
    add_route(app, "GET", "/prompt", routes.status)
    add_route(app, "POST", "/prompt", routes.post)
    add_route(app, "POST", "/workflow/run", routes.run_workflow)
