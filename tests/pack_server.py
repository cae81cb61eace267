"""Packs through a real server in tests: load packs into a registry, serve it, connect the packs'
PromptServer and our client channel to the app (as main.py does)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from executor.run import Executor
from nodes.compat import server as compat_server
from nodes.runtime.channel import CHANNEL
from nodes.runtime.custom_loader import PackReport, load_custom_nodes
from nodes.runtime.registry import build_registry
from nodes.runtime.services import NodeServices
from tests.web_harness import make_services, serve

PACKS = Path(__file__).resolve().parent / "packs"


def attach(web_app: Any, send_json: Any, send_bytes: Any, current_client: Any) -> None:
    CHANNEL.connect(send_json, send_bytes, current_client)
    compat_server.PromptServer.instance.attach(web_app)


def load(root: Path, folders: Sequence[Path], *, entry_points: bool = False) -> tuple[Any, PackReport]:
    """Web services over `root` with built-ins plus the packs of `folders` (a fresh PromptServer)."""
    compat_server.PromptServer()  # packs imported now decorate a fresh route table
    registry = build_registry()
    services = make_services(root, registry=registry)
    node_services = NodeServices(settings=services.settings, model_paths=services.model_paths)
    report = load_custom_nodes(list(folders), registry, entry_points=entry_points, services=node_services)
    services = dataclasses.replace(
        services,
        executor=Executor(registry, services=node_services),
        node_services=node_services,
        packs=tuple(report.as_dicts()),
        attach_packs=attach,
        on_prompt=compat_server.PromptServer.instance.trigger_on_prompt,
        web_directories=report.web_directories,
    )
    return services, report


@asynccontextmanager
async def serve_packs(services: Any) -> AsyncIterator[TestClient]:
    try:
        async with serve(services) as client:
            yield client
    finally:
        CHANNEL.disconnect()
