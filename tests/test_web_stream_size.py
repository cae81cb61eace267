"""The WebSocket stream of a prompt grows linearly with the prompt: bytes and messages per node stay
flat from 100 to 1,600 nodes, for chains and wide graphs, through the real sink and hub in process.

A fake clock makes the run deterministic: each reading advances it by `tick` seconds, so the sink's
coalescing sees the same timeline however loaded the machine is.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from executor.recorder import RunRecorder
from executor.run import Executor
from tests.fake_nodes import fake_registry
from web import sink as sink_module
from web.hub import Hub
from web.sink import WebEventSink

pytestmark = pytest.mark.asyncio


def chain(n: int) -> dict[str, Any]:
    """Number -> Pick x (n - 2) -> Show."""
    prompt: dict[str, Any] = {"0": {"class_type": "Number", "inputs": {"value": 1}}}
    for i in range(1, n - 1):
        prompt[str(i)] = {"class_type": "Pick", "inputs": {"x": [str(i - 1), 0], "mode": "same"}}
    prompt[str(n - 1)] = {"class_type": "Show", "inputs": {"value": [str(n - 2), 0]}}
    return prompt


def wide(n: int) -> dict[str, Any]:
    """n / 2 independent Text -> Show pairs: n / 2 outputs, each with its own `executed`."""
    prompt: dict[str, Any] = {}
    for i in range(n // 2):
        prompt[f"t{i}"] = {"class_type": "Text", "inputs": {"text": f"text {i}"}}
        prompt[f"s{i}"] = {"class_type": "Show", "inputs": {"value": [f"t{i}", 0]}}
    return prompt


class Socket:
    """A client socket that reads instantly and counts what it got."""

    def __init__(self) -> None:
        self.closed = False
        self.messages = 0
        self.bytes = 0
        self.kinds: dict[str, int] = {}

    async def send_str(self, data: str) -> None:
        self.messages += 1
        self.bytes += len(data.encode())
        kind = json.loads(data)["type"]
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    async def send_bytes(self, data: bytes) -> None:
        self.messages += 1
        self.bytes += len(data)

    async def close(self, **_: object) -> None:
        self.closed = True


def fake_clock(tick: float):
    now = [0.0]

    def clock() -> float:
        now[0] += tick
        return now[0]

    return clock


async def stream_of(prompt: dict[str, Any], *, tick: float, state_interval_s: float) -> Socket:
    hub = Hub()
    hub.attach(asyncio.get_running_loop())
    socket = Socket()
    hub.connect("c", socket)  # type: ignore[arg-type]
    recorder = RunRecorder("p")
    sink = WebEventSink(
        hub, recorder, client_id="c", state_interval_s=state_interval_s, clock=fake_clock(tick)
    )
    executor = Executor(fake_registry())
    validated = executor.validate(prompt)
    await asyncio.to_thread(executor.execute, validated, prompt, prompt_id="p", sink=sink)
    sink.finish()
    for _ in range(5000):  # let the flush and the writer deliver everything
        await asyncio.sleep(0.001)
        if socket.kinds.get("executing", 0) == len(prompt) + 1 and not hub.clients["c"].frames:
            break
    await hub.close_all()
    assert socket.kinds["executing"] == len(prompt) + 1  # one per node and the closing null
    assert socket.kinds["execution_success"] == 1
    return socket


@pytest.mark.parametrize("shape", [chain, wide])
async def test_bytes_and_messages_per_node_stay_flat(shape):
    """A fast engine (30 µs per event): the full state goes out at the end only."""
    sizes = (100, 400, 1600)
    streams = [await stream_of(shape(n), tick=30e-6, state_interval_s=0.25) for n in sizes]
    per_node = [(s.bytes / n, s.messages / n) for s, n in zip(streams, sizes)]
    for bytes_per_node, messages_per_node in per_node[1:]:
        assert bytes_per_node == pytest.approx(per_node[0][0], rel=0.1), per_node
        assert messages_per_node == pytest.approx(per_node[0][1], rel=0.1), per_node
    assert per_node[-1][0] < 600  # executing + executed + one progress_state entry, a few hundred bytes


@pytest.mark.parametrize("shape", [chain, wide])
async def test_state_budget_bounds_the_stream_even_unthrottled(shape):
    """Worst case: no interval, a slow engine (2 ms per event). ComfyUI would send a full state per
    node start and finish (bytes growing with the square of the size); the entry budget keeps the
    stream linear: four times the nodes, at most four times the bytes plus the fixed burst."""
    small, large = [await stream_of(shape(n), tick=2e-3, state_interval_s=0.0) for n in (400, 1600)]
    assert large.bytes <= 4.4 * small.bytes, (small.bytes, large.bytes)
    assert large.messages <= 4.4 * small.messages
    assert small.kinds["progress_state"] > 5  # states did go out while it ran


async def test_nothing_is_encoded_when_nobody_listens(monkeypatch):
    built: list[str] = []
    real = sink_module.json_frame

    def counting(kind, data, **kw):
        built.append(kind)
        return real(kind, data, **kw)

    monkeypatch.setattr(sink_module, "json_frame", counting)
    hub = Hub()
    hub.attach(asyncio.get_running_loop())
    for client_id in ("c", None):  # the submitter is gone / a prompt without client id
        sink = WebEventSink(hub, RunRecorder("p"), client_id=client_id, state_interval_s=0.0)
        prompt = chain(300)
        executor = Executor(fake_registry())
        await asyncio.to_thread(executor.execute, executor.validate(prompt), prompt, prompt_id="p", sink=sink)
        sink.finish()
    assert built == []


async def test_a_pending_state_reaches_the_client_without_further_events():
    """A node that starts right after another and then runs silently is still shown running: the state
    held back by the interval is sent by a timer on the loop."""
    from executor import events as ev

    hub = Hub()
    hub.attach(asyncio.get_running_loop())
    got: list[dict] = []

    class Collect(Socket):
        async def send_str(self, data: str) -> None:
            got.append(json.loads(data))

    hub.connect("c", Collect())  # type: ignore[arg-type]
    sink = WebEventSink(hub, RunRecorder("p"), client_id="c", state_interval_s=0.05)
    sink.emit(ev.ExecutionStart("p"))
    sink.emit(ev.ExecutionCached("p", ()))
    sink.emit(ev.Executing("p", "a"))
    sink.emit(ev.Executing("p", "b"))  # within the interval: held back

    def states() -> list[dict]:
        return [
            {k: v["state"] for k, v in m["data"]["nodes"].items()}
            for m in got
            if m["type"] == "progress_state"
        ]

    for _ in range(500):
        await asyncio.sleep(0.01)
        if len(states()) == 2:
            break
    assert states() == [{"a": "running"}, {"a": "finished", "b": "running"}]
    assert [m["type"] for m in got] == [
        "execution_start",
        "execution_cached",
        "progress_state",
        "executing",
        "executing",
        "progress_state",
    ]
    sink.emit(ev.ExecutionSuccess("p"))
    sink.finish()
    await hub.close_all()
