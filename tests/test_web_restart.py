"""Restart: prompts queued or running when the server stops run after it starts again; history stays."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from executor.queue import PromptQueue
from tests.web_harness import (
    Gates,
    chain_prompt,
    gate_prompt,
    make_services,
    post_prompt,
    receive,
    serve,
    until_done,
    web_registry,
)

pytestmark = pytest.mark.asyncio
ROOT = Path(__file__).resolve().parent.parent


class SignallingQueue(PromptQueue):
    """Sets `finished` once `expected` prompts have been written to history."""

    def __init__(self, path: Path, expected: int) -> None:
        super().__init__(path)
        self.expected = expected
        self.finished = threading.Event()

    def task_done(self, *args, **kwargs) -> None:
        super().task_done(*args, **kwargs)
        if len(self.history()) >= self.expected:
            self.finished.set()


async def test_stop_before_prompts_finish_then_restart_runs_them_all(tmp_path):
    first_gates = Gates()
    services = make_services(tmp_path, web_registry(first_gates))
    async with serve(services) as client:
        ws = await client.ws_connect("/ws?clientId=S")
        await receive(ws)
        done = (await post_prompt(client, chain_prompt(1), client_id="S"))["prompt_id"]
        await until_done(ws, done)
        gated = [
            (await post_prompt(client, gate_prompt(v), client_id="S"))["prompt_id"] for v in (10, 20, 30)
        ]
        assert await asyncio.to_thread(first_gates.started.wait, 10)
        queue = await (await client.get("/queue")).json()
        assert [i[1] for i in queue["queue_running"]] == gated[:1]
        assert [i[1] for i in queue["queue_pending"]] == gated[1:]
        await ws.close()
    # the server stopped while gate 10 was running: nothing ran to the end, nothing was written as failed
    assert first_gates.runs == []

    second_gates = Gates()
    second_gates.release.set()
    registry = web_registry(second_gates)
    restarted = dataclasses.replace(
        make_services(tmp_path, registry),
        queue=SignallingQueue(tmp_path / "user" / "queue.sqlite3", expected=4),
    )
    async with serve(restarted) as client:
        assert await asyncio.to_thread(restarted.queue.finished.wait, 10)
        history = await (await client.get("/history")).json()
        assert await (await client.get("/queue")).json() == {"queue_running": [], "queue_pending": []}
    assert second_gates.runs == [10, 20, 30]  # the interrupted one first, then the rest in order
    assert list(history) == [done, *gated]
    assert all(entry["status"]["status_str"] == "success" for entry in history.values())
    assert history[done]["outputs"] == {"3": {"text": ["1"]}}
    assert [history[p]["outputs"]["s"]["text"] for p in gated] == [["10"], ["20"], ["30"]]


SERVER_SCRIPT = """
import asyncio, sys
from aiohttp import web
sys.path.insert(0, {root!r})
from tests.web_harness import Gates, make_services, web_registry
from web.app import create_app
from pathlib import Path
services = make_services(Path({tmp!r}), web_registry(Gates()))
web.run_app(create_app(services), host="127.0.0.1", port=0, print=lambda *a: None,
            handle_signals=True, access_log=None)
"""


async def test_killed_server_loses_nothing(tmp_path):
    """SIGKILL (no shutdown at all) while a prompt runs: after a restart it runs, the rest too."""
    queue = PromptQueue.in_user_dir(tmp_path / "user")
    for value in (1, 2):
        queue.put(f"p{value}", None, gate_prompt(value), {}, ["s"])
    queue.close()
    code = SERVER_SCRIPT.format(root=str(ROOT), tmp=str(tmp_path))
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        # The gate never opens in the child. Another process has no event to wait on: poll the database
        # (read-only, so no recovery runs) until it says p1 is running, then kill.
        def running() -> bool:
            uri = f"file:{tmp_path / 'user' / 'queue.sqlite3'}?mode=ro"
            with sqlite3.connect(uri, uri=True) as db:
                return db.execute("SELECT state FROM queue WHERE prompt_id='p1'").fetchone() == ("running",)

        for _ in range(600):
            if process.poll() is not None or running():
                break
            await asyncio.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()
        assert running()
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)

    gates = Gates()
    gates.release.set()
    services = dataclasses.replace(
        make_services(tmp_path, web_registry(gates)),
        queue=SignallingQueue(tmp_path / "user" / "queue.sqlite3", expected=2),
    )
    async with serve(services) as client:
        assert await asyncio.to_thread(services.queue.finished.wait, 10)
        history = await (await client.get("/history")).json()
    assert gates.runs == [1, 2] and list(history) == ["p1", "p2"]
    assert json.dumps(history["p1"]["outputs"]) == json.dumps({"s": {"text": ["1"]}})
