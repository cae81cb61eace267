"""REST routes: prompt, workflow/run, queue, interrupt, free, history, jobs — every error path too."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid

import pytest
import pytest_asyncio

from executor.errors import PromptValidationError
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


class Server:
    def __init__(self, client, services) -> None:
        self.client = client
        self.services = services


@pytest_asyncio.fixture
async def idle(tmp_path):
    """A server whose worker does not run: queued prompts stay pending."""
    services = make_services(tmp_path)
    async with serve(services, start_worker=False) as client:
        yield Server(client, services)


@pytest_asyncio.fixture
async def live(tmp_path):
    gates = Gates()
    services = make_services(tmp_path, web_registry(gates))
    async with serve(services) as client:
        server = Server(client, services)
        server.gates = gates
        yield server


async def error_of(response, status: int = 400) -> dict:
    assert response.status == status, await response.text()
    return await response.json()


# --- POST /prompt -------------------------------------------------------------------------------
async def test_post_prompt_numbers_front_and_client_ids(idle):
    client = idle.client
    first = await post_prompt(client, chain_prompt(1))
    assert uuid.UUID(first["prompt_id"]).version == 4 and first["number"] == 1 and first["node_errors"] == {}
    assert (await post_prompt(client, chain_prompt(2)))["number"] == 2
    assert (await post_prompt(client, chain_prompt(3), front=True))["number"] == -3
    assert (await post_prompt(client, chain_prompt(4), number=0.5))["number"] == 0.5
    chosen = str(uuid.uuid4())
    response = await client.post(
        "/api/prompt",
        data=json.dumps({"prompt": chain_prompt(5), "prompt_id": chosen}),
        headers={"Content-Type": "text/plain"},
    )  # JSON whatever the content type
    assert (await response.json())["prompt_id"] == chosen
    pending = (await (await client.get("/queue")).json())["queue_pending"]
    assert [item[0] for item in pending] == [-3, 0.5, 1, 2, 5]
    assert await (await client.get("/api/prompt")).json() == {"exec_info": {"queue_remaining": 5}}


async def test_extra_data_gets_client_and_time_and_loses_credentials(idle):
    await post_prompt(
        idle.client,
        chain_prompt(1),
        client_id="tab1",
        extra_data={"extra_pnginfo": {"workflow": {"id": "w1"}}, "api_key_comfy_org": "SECRET"},
    )
    item = (await (await idle.client.get("/queue")).json())["queue_pending"][0]
    extra = item[3]
    assert extra["client_id"] == "tab1" and isinstance(extra["create_time"], int)
    assert extra["extra_pnginfo"] == {"workflow": {"id": "w1"}} and "api_key_comfy_org" not in extra
    assert item[4] == ["3"]


@pytest.mark.parametrize(
    "body,kind",
    [
        ({}, "no_prompt"),
        ({"prompt": None}, "no_prompt"),
        ({"prompt": chain_prompt(), "prompt_id": "not-a-uuid"}, "invalid_prompt_id"),
        ({"prompt": chain_prompt(), "prompt_id": str(uuid.uuid4()).upper()}, "invalid_prompt_id"),
        ({"prompt": chain_prompt(), "prompt_id": 12}, "invalid_prompt_id"),
        ({"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}, "missing_node_type"),
        ({"prompt": {"1": {"class_type": "Number", "inputs": {"value": 1}}}}, "prompt_no_outputs"),
        ({"prompt": "text"}, "invalid_prompt"),
    ],
)
async def test_post_prompt_refusals_have_comfy_shape(idle, body, kind):
    answer = await error_of(await idle.client.post("/prompt", json=body))
    assert answer["error"]["type"] == kind and answer["error"]["message"]
    assert "node_errors" in answer
    assert (await (await idle.client.get("/queue")).json())["queue_pending"] == []


async def test_validation_errors_match_the_executor(idle):
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 500}},
        "3": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    answer = await error_of(await idle.client.post("/prompt", json={"prompt": prompt}))
    with pytest.raises(PromptValidationError) as expected:
        idle.services.executor.validate(prompt)
    assert answer == json.loads(json.dumps(expected.value.as_response()))
    assert answer["node_errors"]["1"]["errors"][0]["type"] == "value_bigger_than_max"


async def test_partial_failure_queues_the_valid_output_and_partial_targets(idle):
    prompt = {**chain_prompt(1), "9": {"class_type": "Show", "inputs": {}}}
    answer = await post_prompt(idle.client, prompt)
    assert list(answer["node_errors"]) == ["9"]
    await post_prompt(
        idle.client,
        {**chain_prompt(1), "8": {"class_type": "Show", "inputs": {"value": 1}}},
        partial_execution_targets=["8"],
    )
    pending = (await (await idle.client.get("/queue")).json())["queue_pending"]
    assert [item[4] for item in pending] == [["3"], ["8"]]


@pytest.mark.parametrize(
    "raw,needle",
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2]", "JSON object"),
        (b'{"prompt": "\xc3\x28"}', "UTF-8"),
        (json.dumps({"prompt": {}, "number": "high"}).encode(), "'number'"),
        (json.dumps({"prompt": {}, "number": True}).encode(), "'number'"),
        (json.dumps({"prompt": {}, "front": "yes"}).encode(), "'front'"),
        (json.dumps({"prompt": {}, "client_id": 5}).encode(), "'client_id'"),
        (json.dumps({"prompt": {}, "extra_data": []}).encode(), "'extra_data'"),
        (
            json.dumps({"prompt": {}, "partial_execution_targets": "3"}).encode(),
            "'partial_execution_targets'",
        ),
        (
            json.dumps({"prompt": {}, "partial_execution_targets": [{}]}).encode(),
            "'partial_execution_targets'",
        ),
    ],
)
async def test_malformed_bodies_are_400_with_a_message(idle, raw, needle):
    for path in ("/prompt", "/api/prompt"):
        answer = await error_of(await idle.client.post(path, data=raw))
        assert needle in json.dumps(answer)


async def test_reused_prompt_id_still_queued_is_refused(idle):
    chosen = str(uuid.uuid4())
    await post_prompt(idle.client, chain_prompt(1), prompt_id=chosen)
    answer = await error_of(
        await idle.client.post("/prompt", json={"prompt": chain_prompt(1), "prompt_id": chosen})
    )
    assert answer["error"]["type"] == "invalid_prompt_id" and "already queued" in answer["error"]["details"]


# --- POST /workflow/run --------------------------------------------------------------------------
UI_WORKFLOW = {
    "id": "wf-1",
    "last_node_id": 2,
    "last_link_id": 1,
    "version": 0.4,
    "nodes": [
        {
            "id": 1,
            "type": "Number",
            "mode": 0,
            "inputs": [],
            "widgets_values": [4],
            "outputs": [{"name": "INT", "type": "INT", "links": [1]}],
        },
        {
            "id": 2,
            "type": "Show",
            "mode": 0,
            "inputs": [{"name": "value", "type": "*", "link": 1}],
            "outputs": [],
            "widgets_values": [],
        },
    ],
    "links": [[1, 1, 0, 2, 0, "INT"]],
}


async def test_workflow_run_converts_ui_format(idle):
    response = await idle.client.post("/api/workflow/run", json={"workflow": UI_WORKFLOW, "client_id": "t"})
    assert response.status == 200, await response.text()
    item = (await (await idle.client.get("/queue")).json())["queue_pending"][0]
    prompt = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in item[2].items()}
    assert prompt == {
        "1": {"class_type": "Number", "inputs": {"value": 4}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    assert item[3]["extra_pnginfo"]["workflow"]["id"] == "wf-1" and item[3]["client_id"] == "t"
    bare = await idle.client.post("/workflow/run", json=UI_WORKFLOW)  # the workflow itself as the body
    assert bare.status == 200


async def test_workflow_run_errors(idle):
    unknown = json.loads(json.dumps(UI_WORKFLOW))
    unknown["nodes"][0]["type"] = "NoSuchNode"
    answer = await error_of(await idle.client.post("/workflow/run", json={"workflow": unknown}))
    assert answer["error"]["type"] == "missing_node_type" and "NoSuchNode" in answer["error"]["message"]
    answer = await error_of(await idle.client.post("/workflow/run", json={"workflow": {"nodes": "x"}}))
    assert "UI-format workflow" in answer["error"]
    await error_of(await idle.client.post("/workflow/run", data=b"nope"))


# --- /queue, /interrupt, /free -----------------------------------------------------------------
async def test_queue_delete_and_clear(idle):
    ids = [(await post_prompt(idle.client, chain_prompt(i)))["prompt_id"] for i in range(4)]
    assert (await idle.client.post("/api/queue", json={"delete": ids[:2]})).status == 200
    pending = (await (await idle.client.get("/api/queue")).json())["queue_pending"]
    assert [item[1] for item in pending] == ids[2:]
    assert (await idle.client.post("/queue", json={"clear": True})).status == 200
    assert await (await idle.client.get("/queue")).json() == {"queue_running": [], "queue_pending": []}


@pytest.mark.parametrize(
    "path,body",
    [
        ("/queue", {"delete": "abc"}),
        ("/queue", {"delete": [1, 2]}),
        ("/queue", {"clear": "yes"}),
        ("/history", {"delete": {"a": 1}}),
        ("/history", {"clear": 1}),
        ("/interrupt", {"prompt_id": 5}),
        ("/free", {"free_memory": "yes"}),
        ("/queue", [1]),
    ],
)
async def test_queue_history_interrupt_free_refuse_wrong_types(idle, path, body):
    answer = await error_of(await idle.client.post(path, json=body))
    assert isinstance(answer["error"], str) and answer["error"]


async def test_free_clears_the_output_cache_and_unloads_models(tmp_path):
    unloaded = []
    services = make_services(tmp_path)
    services = dataclasses.replace(services, free_models=lambda: unloaded.append(True))
    async with serve(services) as client:
        ws = await client.ws_connect("/ws?clientId=S")
        await receive(ws)
        first = await post_prompt(client, chain_prompt(8), client_id="S")
        await until_done(ws, first["prompt_id"])
        assert len(services.executor.cache) > 0
        assert (
            await client.post("/api/free", json={"unload_models": True, "free_memory": True})
        ).status == 200
        again = await post_prompt(client, chain_prompt(8), client_id="S")
        messages = await until_done(ws, again["prompt_id"])
        cached = next(m for m in messages if m["type"] == "execution_cached")
        assert cached["data"]["nodes"] == [] and unloaded == [True]


# --- /history ----------------------------------------------------------------------------------
async def test_history_routes(live):
    client = live.client
    ws = await client.ws_connect("/ws?clientId=S")
    await receive(ws)
    ids = []
    for value in range(4):
        ids.append((await post_prompt(client, chain_prompt(value), client_id="S"))["prompt_id"])
        await until_done(ws, ids[-1])
    history = await (await client.get("/history")).json()
    assert list(history) == ids
    assert list(await (await client.get("/api/history?max_items=2")).json()) == ids[2:]
    assert list(await (await client.get("/history?max_items=2&offset=1")).json()) == ids[1:3]
    one = await (await client.get(f"/history/{ids[0]}")).json()
    assert one[ids[0]]["outputs"] == {"3": {"text": ["0"]}} and one[ids[0]]["prompt"][1] == ids[0]
    assert await (await client.get("/history/unknown")).json() == {}
    await error_of(await client.get("/history?max_items=lots"))
    await error_of(await client.get("/history?max_items=-1"))
    assert (await client.post("/history", json={"delete": [ids[0]]})).status == 200
    assert list(await (await client.get("/history")).json()) == ids[1:]
    assert (await client.post("/api/history", json={"clear": True})).status == 200
    assert await (await client.get("/history")).json() == {}
    await ws.close()


# --- jobs API ----------------------------------------------------------------------------------
async def test_jobs_list_detail_and_cancel(live):
    client, gates = live.client, live.gates
    ws = await client.ws_connect("/ws?clientId=S")
    await receive(ws)
    done = (await post_prompt(client, chain_prompt(2), client_id="S"))["prompt_id"]
    await until_done(ws, done)
    running = (await post_prompt(client, gate_prompt(1), client_id="S"))["prompt_id"]
    pending = (await post_prompt(client, gate_prompt(2), client_id="S"))["prompt_id"]
    assert await asyncio.to_thread(gates.started.wait, 10)
    page = await (await client.get("/api/jobs?status=in_progress,pending&limit=200&offset=0")).json()
    assert [(j["id"], j["status"]) for j in page["jobs"]] == [(pending, "pending"), (running, "in_progress")]
    assert page["pagination"] == {"offset": 0, "limit": 200, "total": 2, "has_more": False}
    finished = await (await client.get("/api/jobs?status=completed,failed,cancelled&limit=1")).json()
    assert finished["jobs"][0]["id"] == done and finished["jobs"][0]["status"] == "completed"
    assert isinstance(finished["jobs"][0]["create_time"], int)
    detail = await (await client.get(f"/api/jobs/{done}")).json()
    assert detail["outputs"] == {"3": {"text": ["2"]}} and detail["workflow"]["prompt"] == chain_prompt(2)
    assert await error_of(await client.get("/api/jobs/unknown"), 404) == {"error": "Job not found"}

    assert await (await client.post(f"/api/jobs/{pending}/cancel")).json() == {"cancelled": True}
    assert await (await client.post(f"/api/jobs/{pending}/cancel")).json() == {"cancelled": False}
    assert await (await client.post("/api/jobs/cancel", json={"job_ids": [running]})).json() == {
        "cancelled": True
    }
    await until_done(ws, running)
    cancelled = await (await client.get(f"/api/jobs/{running}")).json()
    assert cancelled["status"] == "cancelled"
    await ws.close()


@pytest.mark.parametrize(
    "query", ["status=bogus", "limit=x", "offset=-1", "sort_by=name", "sort_order=sideways"]
)
async def test_jobs_bad_parameters(idle, query):
    answer = await error_of(await idle.client.get(f"/api/jobs?{query}"))
    assert answer["error"]


async def test_jobs_cancel_many_validates_ids(idle):
    answer = await error_of(
        await idle.client.post("/api/jobs/cancel", json={"job_ids": ["x", str(uuid.uuid4())]})
    )
    assert answer["invalid_ids"] == ["x"]
    await error_of(await idle.client.post("/api/jobs/cancel", json={"job_ids": "x"}))
    await error_of(await idle.client.post("/api/jobs/cancel", data=b"{"))
