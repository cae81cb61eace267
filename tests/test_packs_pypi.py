"""Real packs from PyPI (requirements-dev.txt), found through their pip entry points and run through
the server: base64 image in and PNG over the WebSocket out (comfyui-tooling-nodes 0.1.0), annotated
paths, IS_CHANGED caching and VALIDATE_INPUTS (ComfyUI_Ib_CustomNodes 0.2.3); civitai_comfy_nodes
0.2.0 calls `nodes.CheckpointLoaderSimple` and subclasses nothing but needs comfy.sd at import."""

from __future__ import annotations

import base64
import io
import struct
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.pack_server import load, serve_packs
from tests.web_harness import post_prompt, until_done

TOOLING = "comfyui_tooling_nodes"
IB = "ComfyUI_Ib_CustomNodes"
CIVITAI = "civitai_comfy_nodes"


def fresh_import() -> None:
    """Packs decorate PromptServer.instance.routes when imported: import them again for this server."""
    for name in list(sys.modules):
        if name.split(".")[0] in (TOOLING, IB, CIVITAI):
            del sys.modules[name]


def png(size: tuple[int, int], color: tuple[int, ...], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def load_pip(tmp_path):
    fresh_import()
    services, report = load(tmp_path, [], entry_points=True)
    return services, {p.name: p for p in report.packs}


def test_both_packs_load_from_their_pip_install(tmp_path):
    _, packs = load_pip(tmp_path)
    assert packs[TOOLING].origin == "pip" and packs[IB].origin == "pip"
    assert packs[TOOLING].error is None and packs[IB].error is None
    assert set(packs[TOOLING].nodes) == {
        "ETN_LoadImageBase64",
        "ETN_LoadMaskBase64",
        "ETN_SendImageWebSocket",
        "ETN_CropImage",
        "ETN_ApplyMaskToImage",
    }
    assert set(packs[IB].nodes) == {"LoadImageFromPath", "PILToImage", "PILToMask", "ImageToPIL"}


@pytest.mark.asyncio
async def test_tooling_nodes_base64_image_in_websocket_png_out(tmp_path):
    services, _ = load_pip(tmp_path)
    source = Image.new("RGB", (10, 8), (0, 0, 255))
    source.paste((255, 255, 0), (2, 3, 6, 7))
    buffer = io.BytesIO()
    source.save(buffer, format="PNG")
    prompt = {
        "1": {
            "class_type": "ETN_LoadImageBase64",
            "inputs": {"image": base64.b64encode(buffer.getvalue()).decode()},
        },
        "2": {
            "class_type": "ETN_CropImage",
            "inputs": {"image": ["1", 0], "x": 2, "y": 3, "width": 4, "height": 4},
        },
        "3": {"class_type": "ETN_SendImageWebSocket", "inputs": {"images": ["2", 0]}},
        "4": {"class_type": "ETN_SendImageWebSocket", "inputs": {"images": ["1", 0]}},
    }
    async with serve_packs(services) as client:
        # The pack's route, added at import, answers (no checkpoints here), plain and under /api.
        assert await (await client.get("/etn/model_info")).json() == {}
        assert await (await client.get("/api/etn/model_info")).json() == {}
        ws = await client.ws_connect("/ws?clientId=krita")
        await ws.receive_json()
        other = await client.ws_connect("/ws?clientId=someone-else")
        await other.receive_json()
        reply = await post_prompt(client, prompt, client_id="krita")
        messages = await until_done(ws, reply["prompt_id"])
        history = (await (await client.get(f"/history/{reply['prompt_id']}")).json())[reply["prompt_id"]]
        pushed_elsewhere = []
        while True:
            try:
                message = await other.receive(timeout=0.2)
            except TimeoutError:
                break
            pushed_elsewhere.append(message.data)
        await ws.close()
        await other.close()
    frames = [m for m in messages if isinstance(m, bytes)]
    assert len(frames) == 2
    sizes = set()
    for frame in frames:
        assert struct.unpack(">II", frame[:8]) == (1, 2)
        with Image.open(io.BytesIO(frame[8:])) as image:
            sizes.add(image.size)
            if image.size == (4, 4):
                assert {image.getpixel((x, y)) for x in range(4) for y in range(4)} == {(255, 255, 0)}
            else:
                assert image.convert("RGB").tobytes() == source.tobytes()
    assert sizes == {(4, 4), (10, 8)}
    assert not any(isinstance(m, bytes) for m in pushed_elsewhere)  # only the prompt's client gets them
    assert history["outputs"]["3"]["images"] == [
        {"source": "websocket", "content-type": "image/png", "type": "output"}
    ]


@pytest.mark.asyncio
async def test_ib_nodes_annotated_paths_caching_and_validation(tmp_path):
    services, _ = load_pip(tmp_path)
    picture = Path(services.settings.output_dir) / "sub" / "red.png"
    picture.parent.mkdir(parents=True)
    picture.write_bytes(png((6, 5), (255, 0, 0, 128), "RGBA"))

    def prompt(name: str) -> dict:
        return {
            "load": {"class_type": "LoadImageFromPath", "inputs": {"image": name}},
            "pil": {"class_type": "ImageToPIL", "inputs": {"images": ["load", 0]}},
            "back": {"class_type": "PILToImage", "inputs": {"images": ["pil", 0]}},
            "mask": {"class_type": "MaskToImage", "inputs": {"mask": ["load", 1]}},
            "save": {"class_type": "PreviewImage", "inputs": {"images": ["back", 0]}},
            "save_mask": {"class_type": "PreviewImage", "inputs": {"images": ["mask", 0]}},
        }

    async with serve_packs(services) as client:
        ws = await client.ws_connect("/ws?clientId=ib")
        await ws.receive_json()
        runs = []
        for step in range(3):
            if step == 2:  # a changed file changes IS_CHANGED's hash: the loader runs again
                picture.write_bytes(png((6, 5), (0, 255, 0, 255), "RGBA"))
            reply = await post_prompt(client, prompt("sub/red.png [output]"), client_id="ib")
            messages = await until_done(ws, reply["prompt_id"])
            ran = {m["data"]["node"] for m in messages if isinstance(m, dict) and m["type"] == "executing"}
            history = (await (await client.get(f"/history/{reply['prompt_id']}")).json())[reply["prompt_id"]]
            runs.append((ran, history))
        for name, message in (
            ("sub/missing.png [output]", "Invalid image path"),
            ("../../escape.png [output]", "outside"),
        ):
            refused = await client.post("/prompt", json={"prompt": prompt(name)})
            assert refused.status == 400, name
            assert message in await refused.text(), name
        await ws.close()
    # Same file: IS_CHANGED's hash matches and nothing runs again; a changed file re-runs the loader.
    assert "load" in runs[0][0] and "load" not in runs[1][0] and "load" in runs[2][0]
    temp = Path(services.settings.temp_dir)
    first, last = (runs[i][1]["outputs"] for i in (0, 2))
    with Image.open(temp / first["save"]["images"][0]["filename"]) as image:
        assert image.size == (6, 5) and image.getpixel((0, 0))[:3] == (255, 0, 0)
    with Image.open(temp / first["save_mask"]["images"][0]["filename"]) as image:
        assert abs(image.getpixel((0, 0))[0] - 127) <= 1  # mask = 1 - alpha (128/255)
    with Image.open(temp / last["save"]["images"][0]["filename"]) as image:
        assert image.getpixel((0, 0))[:3] == (0, 255, 0)


def test_civitai_pack_loads_a_local_checkpoint_through_our_loader(tmp_path, demo_models_dir, monkeypatch):
    """Its checkpoint loader runs our CheckpointLoaderSimple via `nodes` (the CivitAI lookup is offline)."""
    from executor.run import Executor
    from nodes.runtime.custom_loader import load_custom_nodes
    from nodes.runtime.model_paths import ModelPaths
    from nodes.runtime.registry import build_registry
    from nodes.runtime.services import NodeServices
    from settings import Settings

    fresh_import()
    settings = Settings(
        models_dir=demo_models_dir,
        output_dir=tmp_path / "o",
        temp_dir=tmp_path / "t",
        input_dir=tmp_path / "i",
        user_dir=tmp_path / "u",
    )
    services = NodeServices(settings=settings, model_paths=ModelPaths.from_models_dir(demo_models_dir))
    registry = build_registry()
    report = load_custom_nodes([], registry, entry_points=True, services=services)
    civitai = next(p for p in report.packs if p.name == CIVITAI)
    assert civitai.error is None and set(civitai.nodes) == {
        "CivitAI_Checkpoint_Loader",
        "CivitAI_Lora_Loader",
    }
    spec = registry["CivitAI_Checkpoint_Loader"].describe(services)
    assert spec.input("ckpt_name").options[:2] == ("none", "flux1-schnell.safetensors")
    model_module = sys.modules[f"{CIVITAI}.CivitAI_Model"]
    monkeypatch.setattr(
        model_module.CivitAI_Model, "sha256_lookup", staticmethod(lambda path: (None, None, None))
    )
    prompt = {
        "civ": {
            "class_type": "CivitAI_Checkpoint_Loader",
            "inputs": {"ckpt_air": "{model_id}@{model_version}", "ckpt_name": "flux1-schnell.safetensors"},
        },
        "ours": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "flux1-schnell.safetensors"},
        },
        "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["img", 0], "vae": ["civ", 2]}},
        "img": {
            "class_type": "EmptyImage",
            "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0},
        },
        "enc2": {"class_type": "VAEEncode", "inputs": {"pixels": ["img", 0], "vae": ["ours", 2]}},
        "a": {"class_type": "PreviewAny", "inputs": {"source": ["enc", 0]}},
        "b": {"class_type": "PreviewAny", "inputs": {"source": ["enc2", 0]}},
    }
    executor = Executor(registry, services=services)
    result = executor.run_prompt(prompt, prompt_id="civitai")
    assert result.outputs["a"] == result.outputs["b"]  # the same VAE from the same file
    assert "'samples': tensor(" in result.outputs["a"]["text"][0]
