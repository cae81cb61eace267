"""WebSocket: handshake, the exact ComfyUI event sequence, binary preview layouts, addressing,
interrupts, reconnects, throttling and slow clients."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest

from executor import events as ev
from executor.recorder import RunRecorder
from tests.web_harness import (
    PREVIEW,
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
from web.hub import Client, Frame, Hub, json_frame, preview_frame
from web.sink import WebEventSink

pytestmark = pytest.mark.asyncio


def kinds(messages: list) -> list[str]:
    return [m["type"] if isinstance(m, dict) else f"binary{struct.unpack('>I', m[:4])[0]}" for m in messages]


async def connect(client, sid: str | None = None, *, metadata: bool | None = None):
    ws = await client.ws_connect(f"/ws?clientId={sid}" if sid else "/ws")
    hello = await receive(ws)
    if metadata is not None:
        await ws.send_str(
            json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": metadata}})
        )
        flags = await receive(ws)
        assert flags["type"] == "feature_flags" and flags["data"]["supports_preview_metadata"] is True
    return ws, hello


async def test_handshake_status_carries_sid_and_feature_flags_reply(tmp_path):
    services = make_services(tmp_path)
    async with serve(services) as client:
        ws, hello = await connect(client)
        assert hello["type"] == "status"
        assert hello["data"]["status"] == {"exec_info": {"queue_remaining": 0}}
        sid = hello["data"]["sid"]
        assert len(sid) == 32 and int(sid, 16) >= 0  # a hex uuid4
        await ws.send_str(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        reply = await receive(ws)
        assert reply == {
            "type": "feature_flags",
            "data": {"supports_preview_metadata": True, "max_upload_size": services.max_upload_bytes},
        }
        ws2, hello2 = await connect(client, "my-client")
        assert hello2["data"]["sid"] == "my-client"
        api_ws = await client.ws_connect("/api/ws")
        assert (await receive(api_ws))["type"] == "status"
        for socket in (ws, ws2, api_ws):
            await socket.close()


@pytest.mark.parametrize("metadata", [True, False])
async def test_exact_event_sequence_and_binary_layout(tmp_path, metadata):
    services = make_services(tmp_path)
    async with serve(services) as client:
        ws, _ = await connect(client, "S", metadata=metadata)
        warm = await post_prompt(client, chain_prompt(3), client_id="S")  # caches node 1 for the next prompt
        await until_done(ws, warm["prompt_id"])
        answer = await post_prompt(client, chain_prompt(3, steps=2), client_id="S")
        pid = answer["prompt_id"]
        messages = await until_done(ws, pid)

    preview = "binary4" if metadata else "binary1"
    assert kinds(messages) == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "progress_state",
        "progress_state",
        "executing",
        "progress",
        "progress_state",
        preview,
        "progress",
        "progress_state",
        preview,
        "progress_state",
        "executing",
        "executed",
        "progress_state",
        "execution_success",
        "status",
        "executing",
    ]
    data = [m["data"] if isinstance(m, dict) else m for m in messages]
    assert data[0]["status"]["exec_info"]["queue_remaining"] == 1  # queued
    assert data[1]["status"]["exec_info"]["queue_remaining"] == 1  # taken by the worker, still counted
    assert data[2]["prompt_id"] == pid and isinstance(data[2]["timestamp"], int)
    assert data[3]["nodes"] == ["1"]
    assert {k: v["state"] for k, v in data[4]["nodes"].items()} == {"1": "finished"}
    assert {k: v["state"] for k, v in data[5]["nodes"].items()} == {"1": "finished", "2": "running"}
    assert data[6] == {"node": "2", "display_node": "2", "prompt_id": pid}
    assert data[7] == {"value": 1, "max": 2, "prompt_id": pid, "node": "2"}
    running = data[8]["nodes"]["2"]
    assert running == {
        "value": 1,
        "max": 2,
        "state": "running",
        "node_id": "2",
        "prompt_id": pid,
        "display_node_id": "2",
        "parent_node_id": None,
        "real_node_id": "2",
    }
    frame = data[9]
    if metadata:
        kind, length = struct.unpack(">II", frame[:8])
        meta = json.loads(frame[8 : 8 + length])
        assert kind == 4
        assert meta == {
            "node_id": "2",
            "prompt_id": pid,
            "display_node_id": "2",
            "parent_node_id": None,
            "real_node_id": "2",
            "image_type": "image/jpeg",
        }
        assert frame[8 + length :] == PREVIEW
    else:
        assert struct.unpack(">II", frame[:8]) == (1, 1)  # PREVIEW_IMAGE, JPEG
        assert frame[8:] == PREVIEW
    assert {k: v["state"] for k, v in data[13]["nodes"].items()} == {
        "1": "finished",
        "2": "finished",
        "3": "running",
    }
    assert data[14]["node"] == "3"
    assert data[15] == {"node": "3", "display_node": "3", "output": {"text": ["3"]}, "prompt_id": pid}
    assert all(v["state"] == "finished" for v in data[16]["nodes"].values())
    assert data[17]["prompt_id"] == pid
    assert data[18]["status"]["exec_info"]["queue_remaining"] == 0
    assert data[19] == {"node": None, "prompt_id": pid}


async def test_history_exists_before_final_executing(tmp_path):
    services = make_services(tmp_path)
    async with serve(services) as client:
        ws, _ = await connect(client, "S")
        pid = (await post_prompt(client, chain_prompt(5), client_id="S"))["prompt_id"]
        while True:
            message = await receive(ws)
            if message["type"] == "executing" and message["data"]["node"] is None:
                break
        history = await (await client.get(f"/history/{pid}")).json()
        assert history[pid]["status"]["status_str"] == "success"
        assert history[pid]["outputs"] == {"3": {"text": ["5"]}}
        assert [m[0] for m in history[pid]["status"]["messages"]] == [
            "execution_start",
            "execution_cached",
            "execution_success",
        ]


async def test_cached_rerun_replays_executed(tmp_path):
    services = make_services(tmp_path)
    async with serve(services) as client:
        ws, _ = await connect(client, "S")
        first = await post_prompt(client, chain_prompt(4), client_id="S")
        await until_done(ws, first["prompt_id"])
        again = await post_prompt(client, chain_prompt(4), client_id="S")
        messages = await until_done(ws, again["prompt_id"])
    assert kinds(messages) == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "progress_state",
        "executed",
        "progress_state",
        "execution_success",
        "status",
        "executing",
    ]
    assert messages[3]["data"]["nodes"] == ["3"]  # the executor lists the cached outputs it reuses
    assert messages[5]["data"]["output"] == {"text": ["4"]}


async def test_node_error_sequence_and_history(tmp_path):
    services = make_services(tmp_path)
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 7}},
        "2": {"class_type": "Fail", "inputs": {"x": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    async with serve(services) as client:
        ws, _ = await connect(client, "S")
        pid = (await post_prompt(client, prompt, client_id="S"))["prompt_id"]
        messages = await until_done(ws, pid)
        history = (await (await client.get(f"/history/{pid}")).json())[pid]
    assert kinds(messages)[-5:] == ["executing", "progress_state", "execution_error", "status", "executing"]
    error = messages[-3]["data"]
    assert error["node_id"] == "2" and error["node_type"] == "Fail"
    assert error["exception_type"] == "ValueError" and error["exception_message"] == "cannot use 7"
    assert error["executed"] == ["1"] and error["current_inputs"] == {"x": 7}
    assert any("cannot use 7" in line for line in error["traceback"])
    assert messages[-4]["data"]["nodes"]["2"]["state"] == "error"
    assert history["status"]["status_str"] == "error" and history["status"]["completed"] is False
    assert history["status"]["messages"][-1] == ["execution_error", error]


async def test_prompt_without_client_id_sends_no_execution_events(tmp_path):
    services = make_services(tmp_path)
    async with serve(services) as client:
        ws, _ = await connect(client, "watcher")
        await post_prompt(client, chain_prompt(2, steps=1))
        seen = []
        while True:
            message = await receive(ws)
            seen.append(message)
            if (
                isinstance(message, dict)
                and message["type"] == "status"
                and message["data"]["status"]["exec_info"]["queue_remaining"] == 0
            ):
                break
    # ComfyUI broadcasts only progress-type messages (and status) for prompts without a client id
    assert set(kinds(seen)) == {"status", "progress", "progress_state", "binary1"}


async def test_events_go_only_to_the_submitter(tmp_path):
    services = make_services(tmp_path)
    async with serve(services) as client:
        submitter, _ = await connect(client, "A")
        other, _ = await connect(client, "B")
        pid = (await post_prompt(client, chain_prompt(6, steps=1), client_id="A"))["prompt_id"]
        await until_done(submitter, pid)
        seen = []
        while True:
            message = await receive(other)
            seen.append(message)
            if message["data"]["status"]["exec_info"]["queue_remaining"] == 0:
                break
    assert kinds(seen) == ["status", "status", "status"]


async def test_interrupt_running_prompt_and_reconnect_sees_executing(tmp_path):
    gates = Gates()
    services = make_services(tmp_path, web_registry(gates))
    async with serve(services) as client:
        ws, _ = await connect(client, "S")
        pid = (await post_prompt(client, gate_prompt(1), client_id="S"))["prompt_id"]
        assert await asyncio.to_thread(gates.started.wait, 10)
        again, hello = await connect(client, "S")  # the same tab reconnecting replaces the old socket
        assert hello["data"]["sid"] == "S"
        assert await receive(again) == {"type": "executing", "data": {"node": "g"}}
        # the old socket is detached, not closed (duplicated tabs share a clientId)
        assert not ws.closed and len(services.hub.clients) == 1
        assert services.hub.clients["S"].closed is False
        other = "00000000-0000-4000-8000-000000000000"
        assert (await client.post("/interrupt", json={"prompt_id": other})).status == 200
        assert (await client.post("/interrupt", data=b"")).status == 200  # no body: interrupt whatever runs
        messages = await until_done(again, pid)
        history = (await (await client.get(f"/history/{pid}")).json())[pid]
    assert "execution_interrupted" in kinds(messages)
    interrupted = next(m for m in messages if isinstance(m, dict) and m["type"] == "execution_interrupted")
    assert interrupted["data"]["node_id"] == "g" and interrupted["data"]["node_type"] == "Gate"
    assert history["status"]["messages"][-1][0] == "execution_interrupted"
    assert gates.runs == []


def sink_with(clock: list[float], interval: float) -> tuple[WebEventSink, list]:
    sent: list = []

    class Recording(Hub):
        def send_threadsafe(self, frames, sid=None):
            sent.extend(frames)

        def is_connected(self, sid):
            return True

    sink = WebEventSink(
        Recording(), RunRecorder("p"), client_id="c", progress_interval_s=interval, clock=lambda: clock[0]
    )
    return sink, sent


async def test_progress_is_throttled_per_node_but_last_always_sent():
    clock = [0.0]
    sink, sent = sink_with(clock, interval=0.1)
    sink.emit(ev.Executing("p", "n", "n"))
    sent.clear()
    for step in range(1, 11):  # ten ticks within 45 ms, then the final one
        clock[0] = step * 0.005
        sink.emit(ev.Progress("p", "n", step, 20, PREVIEW if step % 2 else None))
    clock[0] = 0.2
    sink.emit(ev.Progress("p", "n", 11, 20))
    clock[0] = 0.201
    sink.emit(ev.Progress("p", "n", 20, 20))
    progress = [
        json.loads(f.text)["data"]["value"]
        for f in sent
        if f.text and json.loads(f.text)["type"] == "progress"
    ]
    assert progress == [1, 11, 20]
    assert sum(1 for f in sent if f.preview) == 1  # only the unthrottled tick carried its preview


async def test_slow_client_sheds_previews_and_progress_then_is_disconnected():
    essential = json_frame("executed", {"n": 1})
    progress = json_frame("progress", {"v": 1}, droppable=True)
    preview = preview_frame(PREVIEW, "JPEG", {"node_id": "1"})
    # never drained in this test: droppable frames go once the first four frames are queued, and the
    # essential backlog holds five at most
    shed = 2 * essential.size + progress.size + preview.size
    client = Client("slow", None, shed, 5 * essential.size)  # type: ignore[arg-type]
    for frame in (essential, progress, preview):
        assert client.push(frame)
    assert client.push(essential)  # over the shed limit now
    assert client.push(progress) and client.dropped == 1  # a droppable newcomer is shed
    assert client.push(essential)  # an essential one makes the queued preview and progress go
    assert all(not f.droppable for f in client.frames) and client.dropped == 3
    assert len(client.frames) == 3 and client.queued == client.backlog == 3 * essential.size
    assert client.push(essential) and client.push(essential)  # essentials queue up to the byte limit
    assert not client.push(essential)  # over it: the hub must drop this client
    while client.frames:
        client.pop()
    assert client.queued == client.backlog == client.droppable == 0


async def test_many_clients_and_a_stalled_one_do_not_block_execution(tmp_path):
    services = make_services(tmp_path)
    async with serve(services) as client:
        sockets = [(await connect(client, f"c{i}"))[0] for i in range(20)]
        stalled, _ = await connect(client, "stalled")  # never reads again
        pids = [(await post_prompt(client, chain_prompt(i, steps=3)))["prompt_id"] for i in range(12)]
        last = pids[-1]
        submitter, _ = await connect(client, "S")
        final = (await post_prompt(client, chain_prompt(99), client_id="S"))["prompt_id"]
        await until_done(submitter, final)
        history = await (await client.get("/history")).json()
        assert set(pids + [final]) <= set(history) and last in history
        for ws in sockets[:3]:  # attentive clients got every status change
            statuses = []
            while not statuses or statuses[-1] != 0:
                message = await receive(ws)
                if isinstance(message, dict) and message["type"] == "status":
                    statuses.append(message["data"]["status"]["exec_info"]["queue_remaining"])
        for ws in sockets + [stalled, submitter]:
            await ws.close()


async def test_frame_payload_variants():
    frame = preview_frame(b"PNGDATA", "PNG", {"node_id": "5"})
    assert frame.payload(False) == struct.pack(">II", 1, 2) + b"PNGDATA"
    with_meta = frame.payload(True)
    length = struct.unpack(">I", with_meta[4:8])[0]
    assert json.loads(with_meta[8 : 8 + length])["image_type"] == "image/png"
    assert Frame(text="x").payload(True) == "x"


class FakeSocket:
    """Stands in for a WebSocketResponse; `blocked` sockets never finish a send."""

    def __init__(self, blocked: bool) -> None:
        self.blocked = blocked
        self.sent: list = []
        self.closed = False
        self.gate = asyncio.Event()

    async def send_str(self, data: str) -> None:
        if self.blocked:
            await self.gate.wait()
        self.sent.append(data)

    send_bytes = send_str

    async def close(self, **_: object) -> None:
        self.closed = True
        self.gate.set()


async def test_hub_disconnects_a_stalled_client_and_keeps_serving_the_rest():
    hub = Hub(shed_bytes=100, max_backlog_bytes=200)
    hub.attach(asyncio.get_running_loop())
    stalled, healthy = FakeSocket(blocked=True), FakeSocket(blocked=False)
    hub.connect("stalled", stalled)  # type: ignore[arg-type]
    hub.connect("healthy", healthy)  # type: ignore[arg-type]
    for i in range(20):  # essential messages, broadcast; the loop never waits on the stalled socket
        hub.send("executed", {"i": i})
        await asyncio.sleep(0)  # let the writers run, as the event loop would between events
    assert "stalled" not in hub.clients and stalled.closed
    for _ in range(10):
        await asyncio.sleep(0)
    assert [json.loads(m)["data"]["i"] for m in healthy.sent] == list(range(20))
    await hub.close_all()


async def test_backlogged_status_snapshots_are_coalesced():
    hub = Hub()
    status, executed = hub.status_frame(3), json_frame("executed", {})
    client = Client("c", None, 2 * (status.size + executed.size), 1 << 20)  # type: ignore[arg-type]
    client.push(status)
    client.push(executed)
    client.push(hub.status_frame(2))  # half full: the stale snapshot (3) is replaced
    assert [json.loads(f.text)["data"].get("status") for f in client.frames] == [
        None,
        {"exec_info": {"queue_remaining": 2}},
    ]


async def test_send_json_threadsafe_from_another_thread_reaches_the_client(tmp_path):
    services = make_services(tmp_path)
    async with serve(services, start_worker=False) as client:
        ws, _ = await connect(client, "pack-ui")
        await asyncio.to_thread(services.hub.send_json_threadsafe, "my.pack.event", {"x": 1}, "pack-ui")
        assert await receive(ws) == {"type": "my.pack.event", "data": {"x": 1}}
        await ws.close()
