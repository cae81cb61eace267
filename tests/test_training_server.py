"""LoRA training watched as a user of the canvas watches it: `workflows/lora_training.json` queued on a
real `python main.py serve` by an aiohttp WebSocket client, which receives a progress message per
step, the live loss (`fluxloom.training`, with the held-out evaluation loss), a validation preview,
and the closing `executing` null; history says success and the periodic saves are on disk."""

from __future__ import annotations

import asyncio
import json
import math
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from tests.live_server import ROOT, live_server
from tests.test_training_workflows import make_lora_dataset, shrink


def training_prompt(models: Path, input_dir: Path) -> dict[str, Any]:
    import main
    from settings import Settings

    app = main.build_app(Settings(models_dir=models, input_dir=input_dir), load_packs=False)
    prompt, _ = main.read_workflow(ROOT / "workflows" / "lora_training.json", app.registry, app.services)
    return shrink(prompt)


async def queue_and_watch(url: str, prompt: dict[str, Any]) -> tuple[str, list[Any]]:
    """POST the prompt with our client id; every message until `executing` null (binary as bytes)."""
    seen: list[Any] = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url + "ws?clientId=watcher", max_msg_size=0) as ws:
            async with session.post(
                url + "prompt", json={"prompt": prompt, "client_id": "watcher"}
            ) as response:
                assert response.status == 200, await response.text()
                prompt_id = (await response.json())["prompt_id"]
            while True:
                message = await ws.receive(timeout=240)
                if message.type == aiohttp.WSMsgType.BINARY:
                    seen.append(message.data)
                    continue
                data = json.loads(message.data)
                seen.append(data)
                done = data["type"] == "executing" and data["data"].get("prompt_id") == prompt_id
                if done and data["data"]["node"] is None:
                    return prompt_id, seen


def test_training_on_the_server_streams_progress_live_loss_and_previews(demo_models_dir, tmp_path):
    make_lora_dataset(tmp_path / "input")
    prompt = training_prompt(demo_models_dir, tmp_path / "input")
    train_node = next(k for k, v in prompt.items() if v["class_type"] == "TrainLoraNode")
    flags = ["--models-dir", str(demo_models_dir), "--custom-nodes-dir", str(tmp_path / "no_packs")]
    for name in ("input", "output", "temp", "user"):
        flags += [f"--{name}-dir", str(tmp_path / name)]
    with live_server(flags, tmp_path / "server.log", startup_s=90) as url:
        prompt_id, seen = asyncio.run(queue_and_watch(url, prompt))
        with urllib.request.urlopen(url + f"history/{prompt_id}") as response:
            status = json.loads(response.read())[prompt_id]["status"]
    assert status["status_str"] == "success", status
    texts = [m for m in seen if isinstance(m, dict)]
    live = [m["data"] for m in texts if m["type"] == "fluxloom.training"]
    assert [d["step"] for d in live] == [1, 2, 3, 4] and all(d["node"] == train_node for d in live)
    assert all(math.isfinite(d["loss"]) and math.isfinite(d["smoothed"]) for d in live)
    assert [d["eval_loss"] is not None for d in live] == [False, True, False, True]  # eval_every=2
    steps = [m["data"]["value"] for m in texts if m["type"] == "progress" and m["data"]["node"] == train_node]
    assert steps[-1] == 4 and steps == sorted(steps)
    assert any(isinstance(m, bytes) for m in seen)  # the validation image at step 4, as a preview frame
    loras = sorted(p.name for p in (tmp_path / "output" / "loras").iterdir())
    assert any("_2_steps" in n for n in loras) and any("_4_steps" in n for n in loras), loras
    assert not [n for n in loras if n.endswith(".tmp")]  # atomic saves leave no partial file
