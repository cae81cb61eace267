"""The composition root end to end: `main.py serve` with the fixture packs and the pip packs, driven
by ComfyScript's virtual mode (a real API client) and a raw WebSocket client reading image frames."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from tests.live_server import live_server
from tests.pack_server import PACKS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("packs_server")
    flags = ["--custom-nodes-dir", str(PACKS)]
    for name in ("models", "input", "output", "temp", "user"):
        (root / name).mkdir()
        flags += [f"--{name}-dir", str(root / name)]
    with live_server(flags, root / "server.log", startup_s=90) as url:
        yield url, root


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def png_base64(size: tuple[int, int], color: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_server_lists_packs_serves_their_routes_and_reports_memory(server):
    url, _ = server
    report = get_json(url + "api/fluxloom/packs")
    loaded = {p["name"] for p in report["packs"] if p["loaded"]}
    assert {
        "fl_utility_pack",
        "fl_v3_pack",
        "fl_websocket_save",
        "comfyui_tooling_nodes",
        "ComfyUI_Ib_CustomNodes",
    } <= loaded
    assert [p["name"] for p in report["packs"] if not p["loaded"]] == ["fl_broken_pack"]
    assert get_json(url + "fl_utility/echo?text=hi") == {"echo": "hi"}
    assert get_json(url + "etn/model_info") == {}
    stats = get_json(url + "system_stats")
    device = stats["devices"][0]
    if device["type"] == "cpu":  # ComfyUI reports system memory as the CPU's VRAM
        assert device["vram_total"] > 0 and device["vram_total"] == stats["system"]["ram_total"]


def test_websocket_client_gets_images_and_pack_messages(server):
    url, _ = server

    async def run() -> list:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url + "ws?clientId=wsclient") as ws:
                prompt = {
                    "1": {
                        "class_type": "ETN_LoadImageBase64",
                        "inputs": {"image": png_base64((6, 4), (9, 99, 199))},
                    },
                    "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
                    "3": {"class_type": "ETN_SendImageWebSocket", "inputs": {"images": ["1", 0]}},
                    "4": {"class_type": "FLSaveImageWebsocket", "inputs": {"images": ["1", 0]}},
                    "5": {"class_type": "NotifyFL", "inputs": {"text": "bye"}},
                    "6": {"class_type": "NotifyFL", "inputs": {"text": "$stamp"}},
                }
                async with session.post(
                    url + "prompt", json={"prompt": prompt, "client_id": "wsclient"}
                ) as reply:
                    assert reply.status == 200, await reply.text()
                    prompt_id = (await reply.json())["prompt_id"]
                seen: list = []
                while True:
                    message = await ws.receive(timeout=60)
                    if message.type == aiohttp.WSMsgType.BINARY:
                        seen.append(message.data)
                        continue
                    data = json.loads(message.data)
                    seen.append(data)
                    if (
                        data["type"] == "executing"
                        and data["data"]["node"] is None
                        and data["data"].get("prompt_id") == prompt_id
                    ):
                        return seen

    seen = asyncio.run(run())
    frames = [m for m in seen if isinstance(m, bytes)]
    assert len(frames) == 3
    for frame in frames:
        assert struct.unpack(">II", frame[:8]) == (1, 2)
        with Image.open(io.BytesIO(frame[8:])) as image:
            assert image.size == (6, 4) and image.convert("RGB").getpixel((5, 3)) == (9, 99, 199)
    assert {"type": "fl_utility.notify", "data": {"text": "bye", "node": "5"}} in seen
    assert {
        "type": "fl_utility.notify",
        "data": {"text": "stamped", "node": "6"},
    } in seen  # on-prompt handler
    assert any(isinstance(m, dict) and m["type"] == "execution_success" for m in seen)


def test_comfyscript_virtual_mode_runs_pack_nodes(server, tmp_path):
    pytest.importorskip("comfy_script", reason="comfy-script is not installed")
    url, root = server
    script = tmp_path / "client.py"
    script.write_text(
        textwrap.dedent(f"""
        import json
        from comfy_script.runtime import load, Workflow
        load({url!r})
        from comfy_script.runtime.nodes import ETNLoadImageBase64, FLInvertV3, SaveImage

        with Workflow(wait=True):
            image, _mask = ETNLoadImageBase64({png_base64((8, 6), (10, 20, 30))!r})
            inverted, width = FLInvertV3(image, 1.0, 'rgb')
            saved = SaveImage(inverted, 'comfyscript')
        images = saved.wait()
        print('RESULT ' + json.dumps({{'sizes': [i.size for i in images], 'pixel': images[0].getpixel((0, 0))}}))
    """)
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(line[len("RESULT ") :])
    assert result == {"sizes": [[8, 6]], "pixel": [245, 235, 225]}
    assert (root / "output" / "comfyscript_00001_.png").is_file()


CLIENTS_PYTHON = ROOT / ".venv-clients" / "bin" / "python"


@pytest.mark.skipif(
    not CLIENTS_PYTHON.exists(), reason="run scripts/bootstrap.sh dev: .venv-clients is missing"
)
def test_comfy_catapult_runs_a_prompt_and_gets_its_history(server, tmp_path):
    url, root = server
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0x3366CC},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "catapult"}},
    }
    path = tmp_path / "prompt.json"
    path.write_text(json.dumps(prompt))
    script = ROOT / "tests" / "clients" / "catapult_client.py"
    done = subprocess.run(
        [str(CLIENTS_PYTHON), str(script), url, str(path), "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads(done.stdout.strip().splitlines()[-1])
    (image,) = history["outputs"]["2"]["images"]
    assert image["filename"].startswith("catapult") and image["type"] == "output"
    saved = root / "output" / image["subfolder"] / image["filename"]
    with Image.open(saved) as picture:
        assert picture.size == (64, 48) and picture.getpixel((5, 5)) == (0x33, 0x66, 0xCC)
