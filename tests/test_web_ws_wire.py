"""Messages queued for a socket are framed by the hub and written in batches: a real aiohttp client
reads every text and binary message intact and in order, at every frame-length encoding, also when
it negotiated permessage-deflate; a client that stops reading backs up into the hub's queue and is
dropped there while the others keep receiving."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from web.hub import Hub, json_frame
from web.ws_wire import encode_frame


def hub_app(hub: Hub) -> web.Application:
    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client = hub.connect(request.query["sid"], ws, request.transport)
        try:
            async for _ in ws:
                pass
        finally:
            hub.disconnect(client)
        return ws

    app = web.Application()
    app.router.add_get("/ws", socket)
    return app


@pytest.mark.asyncio
@pytest.mark.parametrize("compress", [0, 15])
async def test_every_frame_length_arrives_intact_and_in_order(compress):
    hub = Hub()
    hub.attach(asyncio.get_running_loop())
    sizes = [0, 1, 125, 126, 127, 65535, 65536, 300_000]
    async with TestClient(TestServer(hub_app(hub))) as client:
        ws = await client.ws_connect("/ws?sid=a", compress=compress, max_msg_size=0)
        while "a" not in hub.clients:
            await asyncio.sleep(0)
        for i, size in enumerate(sizes):  # text with multi-byte characters, then binary
            hub.send("m", {"i": i, "text": "é" * size})
            hub.dispatch([json_frame("bin", {}), _binary(bytes([i % 256]) * size)], "a")
        for i, size in enumerate(sizes):
            text = json.loads((await ws.receive(timeout=10)).data)
            assert text == {"type": "m", "data": {"i": i, "text": "é" * size}}
            assert json.loads((await ws.receive(timeout=10)).data)["type"] == "bin"
            binary = await ws.receive(timeout=10)
            assert binary.type == aiohttp.WSMsgType.BINARY and binary.data == bytes([i % 256]) * size
        await ws.close()
    await hub.close_all()


def _binary(data: bytes):
    from web.hub import Frame

    return Frame(binary=data, binary_meta=data)


@pytest.mark.asyncio
async def test_a_client_that_stops_reading_is_dropped_and_the_others_keep_receiving():
    hub = Hub(shed_bytes=1 << 20, max_backlog_bytes=4 << 20)
    hub.attach(asyncio.get_running_loop())
    async with TestClient(TestServer(hub_app(hub))) as client:
        stalled = await client.ws_connect("/ws?sid=stalled")
        reader = await client.ws_connect("/ws?sid=reader", max_msg_size=0)
        while len(hub.clients) < 2:
            await asyncio.sleep(0)
        got = 0
        chunk = "x" * 60_000
        for i in range(400):  # 24 MB of essential messages: far beyond buffers plus the backlog limit
            hub.send("executed", {"i": i, "blob": chunk})
            await asyncio.sleep(0)
            while True:  # the attentive client reads as it goes
                try:
                    message = await reader.receive(timeout=0.001 if i < 399 else 10)
                except asyncio.TimeoutError:
                    break
                assert json.loads(message.data)["data"]["i"] == got
                got += 1
                if got == 400:
                    break
        assert "stalled" not in hub.clients  # dropped by the backlog limit, not buffered without end
        assert "reader" in hub.clients and got == 400
        await reader.close()
        await stalled.close()
    await hub.close_all()


def test_frame_headers_follow_rfc6455():
    assert encode_frame("hi") == b"\x81\x02hi"
    assert encode_frame(b"\x00") == b"\x82\x01\x00"
    assert encode_frame("a" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert encode_frame(b"b" * 70_000)[:10] == b"\x82\x7f" + (70_000).to_bytes(8, "big")
