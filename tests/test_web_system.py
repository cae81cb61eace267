"""object_info, system_stats, features, model listings, users/settings, internal and degrade routes."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
import pytest_asyncio
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from executor.object_info import object_info
from tests.web_harness import make_services, serve

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def server(tmp_path):
    services = make_services(tmp_path)
    async with serve(services, start_worker=False) as client:
        client.services = services
        client.root = tmp_path
        yield client


async def test_object_info_matches_the_executor_both_prefixes(server):
    expected = json.loads(json.dumps(object_info(server.services.registry)))
    for path in ("/object_info", "/api/object_info"):
        assert await (await server.get(path)).json() == expected
    one = await (await server.get("/api/object_info/Number")).json()
    assert one == {"Number": expected["Number"]}
    assert await (await server.get("/object_info/NoSuchNode")).json() == {}


async def test_system_stats_and_features(server):
    stats = await (await server.get("/api/system_stats")).json()
    system = stats["system"]
    assert isinstance(system["argv"], list) and system["os"] and system["python_version"]
    assert system["required_frontend_version"] == ""
    assert system["ram_total"] >= system["ram_free"] > 0
    assert stats["devices"][0]["type"] == "cpu"
    assert stats["devices"][0]["vram_total"] == system["ram_total"]  # ComfyUI: a CPU reports system memory
    features = await (await server.get("/features")).json()
    assert features == {"supports_preview_metadata": True, "max_upload_size": 100 * 1024 * 1024}


async def test_model_listings_embeddings_and_metadata(server):
    models = server.root / "models"
    (models / "loras" / "style").mkdir(parents=True)
    (models / "loras" / "style" / "b.safetensors").write_bytes(b"x")
    (models / "loras" / "a.safetensors").write_bytes(b"x")
    (models / "embeddings").mkdir()
    (models / "embeddings" / "good.pt").write_bytes(b"x")
    kinds = await (await server.get("/models")).json()
    assert "loras" in kinds and "checkpoints" in kinds
    assert await (await server.get("/api/models/loras")).json() == ["a.safetensors", "style/b.safetensors"]
    assert (await server.get("/models/nonsense")).status == 404
    assert await (await server.get("/embeddings")).json() == ["good"]
    experiment = await (await server.get("/api/experiment/models")).json()
    assert {"name": "loras", "folders": [str(models / "loras")]} in experiment
    files = await (await server.get("/api/experiment/models/loras")).json()
    assert files == [
        {"name": "a.safetensors", "pathIndex": 0},
        {"name": "style/b.safetensors", "pathIndex": 0},
    ]

    path = models / "loras" / "meta.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"ss_network_dim": "16", "note": "hi"})
    with safe_open(str(path), "pt") as handle:
        expected = handle.metadata()
    answer = await (await server.get("/view_metadata/loras", params={"filename": "meta.safetensors"})).json()
    assert answer == expected
    for params, status in (
        ({"filename": "nope.safetensors"}, 404),
        ({}, 400),
        ({"filename": "a.ckpt"}, 400),
        ({"filename": "../x.safetensors"}, 400),
    ):
        assert (await server.get("/api/view_metadata/loras", params=params)).status == status
    assert (await server.get("/view_metadata/zzz", params={"filename": "a.safetensors"})).status == 404


async def test_degrading_routes_answer_empty(server):
    for path in ("/api/i18n", "/api/global_subgraphs", "/api/node_replacements", "/api/workflow_templates"):
        response = await server.get(path)
        assert response.status == 200 and await response.json() == {}
    assert (await server.get("/api/global_subgraphs/abc")).status == 404


async def test_users_and_settings(server):
    assert await (await server.get("/api/users")).json() == {"storage": "server", "migrated": True}
    refused = await server.post("/api/users", json={"username": "bob"})
    assert refused.status == 400 and "single-user" in (await refused.json())["error"]
    assert (await server.post("/api/users", json={"username": 3})).status == 400
    assert await (await server.get("/api/settings")).json() == {}
    # the frontend posts settings without a JSON content type
    assert (await server.post("/api/settings/Comfy.Theme", data=b'"dark"')).status == 200
    assert await (await server.get("/api/settings/Comfy.Theme")).json() == "dark"
    assert await (await server.get("/settings/Unknown")).json() is None
    assert (await server.post("/settings", data=json.dumps({"A": 1, "B": [1, 2]}))).status == 200
    assert await (await server.get("/api/settings")).json() == {"Comfy.Theme": "dark", "A": 1, "B": [1, 2]}
    stored = json.loads((server.root / "user" / "default" / "comfy.settings.json").read_text())
    assert stored["B"] == [1, 2]
    for bad in (b"[1]", b"{oops", b""):
        assert (await server.post("/api/settings", data=bad)).status == 400
    assert (await server.post("/api/settings/X", data=b"{oops")).status == 400
    assert (await server.post("/api/settings/X", data=b"")).status == 200  # empty body sets null


async def test_internal_routes(server):
    (server.root / "input" / "old.png").write_bytes(b"1")
    (server.root / "input" / "new.png").write_bytes(b"2")
    past = time.time() - 100
    os.utime(server.root / "input" / "old.png", (past, past))
    assert await (await server.get("/internal/files/input")).json() == ["new.png", "old.png"]
    assert (await server.get("/internal/files/models")).status == 400
    assert isinstance(await (await server.get("/internal/logs")).json(), str)
    raw = await (await server.get("/internal/logs/raw")).json()
    assert isinstance(raw["entries"], list) and set(raw["size"]) == {"cols", "rows"}
    assert (
        await server.patch("/internal/logs/subscribe", json={"clientId": "a", "enabled": True})
    ).status == 200
    assert (await server.patch("/internal/logs/subscribe", json={"enabled": True})).status == 400
    paths = await (await server.get("/internal/folder_paths")).json()
    assert paths["loras"] == [str((server.root / "models" / "loras").resolve())]
    assert (await server.get("/api/internal/logs")).status == 404  # internal routes have no /api prefix


async def test_unknown_routes_and_methods(server):
    assert (await server.get("/api/does-not-exist")).status == 404
    assert (await server.delete("/api/prompt")).status == 405


async def test_log_subscription_pushes_new_lines(server):
    ws = await server.ws_connect("/ws?clientId=term")
    await ws.receive(timeout=5)  # status
    await server.patch("/internal/logs/subscribe", json={"clientId": "term", "enabled": True})
    logging.getLogger("fluxloom.test").warning("hello from the test")
    message = json.loads((await ws.receive(timeout=5)).data)
    assert message["type"] == "logs" and "hello from the test" in message["data"]["entries"][0]["m"]
    raw = await (await server.get("/internal/logs/raw")).json()
    assert any("hello from the test" in e["m"] for e in raw["entries"])
    await ws.close()
