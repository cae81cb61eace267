"""Origin check on loopback, Host check when bound to loopback, the optional auth token."""

from __future__ import annotations

import pytest
from aiohttp import WSServerHandshakeError

from tests.web_harness import make_services, serve
from web.security import is_loopback

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(
    "host,expected",
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("app.localhost", True),
        ("example.com", False),
        ("10.0.0.1", False),
        ("", False),
        (None, False),
    ],
)
async def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


async def test_cross_origin_requests_to_loopback_are_refused(tmp_path):
    async with serve(make_services(tmp_path), start_worker=False) as client:
        port = client.port
        same = await client.get("/api/queue", headers={"Origin": f"http://127.0.0.1:{port}"})
        assert same.status == 200
        assert (await client.get("/api/queue")).status == 200  # no Origin: not a browser cross-site request
        for origin in (
            "http://evil.example",
            f"http://localhost:{port}",
            f"http://127.0.0.1:{port + 1}",
            "null",
            "http://127.0.0.1",
            "not a url",
        ):
            response = await client.post("/api/prompt", json={"prompt": {}}, headers={"Origin": origin})
            assert response.status == 403, origin
            assert "cross-origin" in (await response.json())["error"]
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
        assert refused.value.status == 403


async def test_dns_rebinding_host_is_refused_when_bound_to_loopback(tmp_path):
    async with serve(make_services(tmp_path), start_worker=False) as client:
        response = await client.get("/api/queue", headers={"Host": "attacker.example:8188"})
        assert response.status == 403
    services = make_services(tmp_path / "open", listen="0.0.0.0", allowed_hosts=("studio.lan",))
    async with serve(services, start_worker=False) as client:
        response = await client.get("/api/queue", headers={"Host": "studio.lan:8188"})
        assert response.status == 200  # a server opened to the network answers the names it was given
        assert (await client.get("/api/queue", headers={"Host": "192.168.1.5:8188"})).status == 200
        rebound = await client.get("/api/queue", headers={"Host": "attacker.example:8188"})
        assert rebound.status == 403 and "--allow-host" in (await rebound.json())["error"]


async def test_auth_token_header_query_and_cookie(tmp_path):
    async with serve(make_services(tmp_path, auth_token="s3cret"), start_worker=False) as client:
        refused = await client.get("/api/queue")
        assert refused.status == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
        assert (await client.get("/api/queue", headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await client.get("/api/queue?token=wrong")).status == 401
        assert (await client.get("/api/queue", headers={"Authorization": "Bearer s3cret"})).status == 200
        via_query = await client.get("/api/queue?token=s3cret")
        assert via_query.status == 200 and via_query.cookies["fluxloom_token"].value == "s3cret"
        # the browser now sends the cookie with every asset and WebSocket request
        assert (await client.get("/api/system_stats")).status == 200
        ws = await client.ws_connect("/ws")
        assert (await ws.receive_json(timeout=5))["type"] == "status"
        await ws.close()
        client.session.cookie_jar.clear()
        with pytest.raises(WSServerHandshakeError) as refused_ws:
            await client.ws_connect("/ws")
        assert refused_ws.value.status == 401
        ws = await client.ws_connect("/ws?token=s3cret")
        await ws.close()
