"""Test harness for the web server: services on a temp folder, an aiohttp test client, WS helpers."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from executor.queue import PromptQueue
from executor.registry import NodeRegistry
from executor.run import Executor
from executor.schema import Int, Node, NodeContext, NodeOutput, Schema, Typed
from nodes.runtime.model_paths import ModelPaths
from settings import Settings
from tests.fake_nodes import FAKE_NODES
from web.app import create_app
from web.services import WebServices


def jpeg_bytes(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="JPEG")
    return buffer.getvalue()


PREVIEW = jpeg_bytes()


class Steps(Node):
    """Reports `steps` progress ticks, each with a JPEG preview; passes its input through."""

    schema = Schema("Steps", inputs=(Typed("x", "INT"), Int("steps", 2, min=1, max=50)), outputs=("INT",))

    @classmethod
    def execute(cls, ctx: NodeContext, x: int, steps: int) -> tuple[int]:
        for step in range(steps):
            ctx.report_progress(step + 1, steps, PREVIEW)
        return (x,)


class SaveNumber(Node):
    """An output node listing a saved image, like SaveImage (the file itself is not written)."""

    schema = Schema("SaveNumber", inputs=(Typed("value", "INT"),), outputs=(), is_output_node=True)

    @classmethod
    def execute(cls, value: int) -> NodeOutput:
        return NodeOutput.of(
            ui={"images": [{"filename": f"n_{value}.png", "subfolder": "", "type": "output"}]}
        )


class Gates:
    """Per-test events for a `Gate` node that blocks until released (or cancelled)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.runs: list[int] = []

    def node(self) -> type[Node]:
        gates = self

        class Gate(Node):
            schema = Schema("Gate", inputs=(Int("value", 0, min=0, max=10_000),), outputs=("INT",))

            @classmethod
            def fingerprint(cls, value: int) -> float:
                return float("nan")  # always runs, so every prompt reaches the gate

            @classmethod
            def execute(cls, ctx: NodeContext, value: int) -> tuple[int]:
                gates.started.set()
                while not gates.release.wait(0.01):
                    ctx.check_cancelled()
                gates.runs.append(value)
                return (value,)

        return Gate


def web_registry(gates: Gates | None = None) -> NodeRegistry:
    registry = NodeRegistry()
    for node in (*FAKE_NODES, Steps, SaveNumber):
        registry.register(node, source="tests")
    registry.register((gates or Gates()).node(), source="tests")
    return registry


def make_services(root: Path, registry: NodeRegistry | None = None, **settings: Any) -> WebServices:
    config = Settings(
        models_dir=root / "models",
        input_dir=root / "input",
        output_dir=root / "output",
        temp_dir=root / "temp",
        user_dir=root / "user",
        **settings,
    )
    for folder in (config.input_dir, config.output_dir, config.temp_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    registry = registry or web_registry()
    return WebServices(
        settings=config,
        registry=registry,
        executor=Executor(registry),
        queue=PromptQueue.in_user_dir(config.user_dir),
        model_paths=ModelPaths.from_models_dir(config.models_dir),
        progress_interval_s=0.0,
        state_interval_s=0.0,
    )


@asynccontextmanager
async def serve(services: WebServices, *, start_worker: bool = True) -> AsyncIterator[TestClient]:
    """A started test client; on exit the app shuts down (worker stopped) and the queue file is closed."""
    client = TestClient(TestServer(create_app(services, start_worker=start_worker)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        services.queue.close()


def chain_prompt(value: int = 3, *, steps: int | None = None) -> dict[str, Any]:
    """Number -> [Steps] -> Show."""
    prompt: dict[str, Any] = {"1": {"class_type": "Number", "inputs": {"value": value}}}
    source = ["1", 0]
    if steps is not None:
        prompt["2"] = {"class_type": "Steps", "inputs": {"x": ["1", 0], "steps": steps}}
        source = ["2", 0]
    prompt["3"] = {"class_type": "Show", "inputs": {"value": source}}
    return prompt


def gate_prompt(value: int) -> dict[str, Any]:
    return {
        "g": {"class_type": "Gate", "inputs": {"value": value}},
        "s": {"class_type": "Show", "inputs": {"value": ["g", 0]}},
    }


async def receive(ws: Any, timeout: float = 10.0) -> dict[str, Any] | bytes:
    message = await ws.receive(timeout=timeout)
    if message.type == WSMsgType.TEXT:
        return json.loads(message.data)
    if message.type == WSMsgType.BINARY:
        return message.data
    raise AssertionError(f"websocket closed or errored: {message.type} {message.data!r}")


async def until_done(ws: Any, prompt_id: str, timeout: float = 10.0) -> list[dict[str, Any] | bytes]:
    """Every message up to and including `executing` with node null for `prompt_id`."""
    seen: list[dict[str, Any] | bytes] = []

    async def read() -> None:
        while True:
            message = await receive(ws, timeout)
            seen.append(message)
            if (
                isinstance(message, dict)
                and message["type"] == "executing"
                and message["data"].get("node") is None
                and message["data"].get("prompt_id") == prompt_id
            ):
                return

    await asyncio.wait_for(read(), timeout)
    return seen


async def post_prompt(client: TestClient, prompt: dict[str, Any], **body: Any) -> dict[str, Any]:
    response = await client.post("/prompt", json={"prompt": prompt, **body})
    assert response.status == 200, await response.text()
    return await response.json()
