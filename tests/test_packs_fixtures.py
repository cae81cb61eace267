"""Fixture packs (tests/packs) modelled on popular packs, loaded and run through the server."""

from __future__ import annotations

import os
import shutil
import struct
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from nodes.runtime.custom_loader import load_custom_nodes, with_pack_folders
from nodes.runtime.model_paths import ModelPaths
from nodes.runtime.registry import build_registry
from tests.pack_server import PACKS, load, serve_packs
from tests.web_harness import post_prompt, until_done


def packs_by_name(report):
    return {p.name: p for p in report.packs}


def image_file(folder: Path, name: str, size: tuple[int, int] = (16, 12)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (250, 10, 10)).save(folder / name)


@pytest.mark.asyncio
async def test_packs_load_and_failures_are_isolated(tmp_path):
    services, report = load(tmp_path, [PACKS])
    packs = packs_by_name(report)
    assert set(packs) == {"fl_utility_pack", "fl_v3_pack", "fl_broken_pack", "fl_websocket_save"}
    assert os.environ.get("FL_UTILITY_PRESTARTUP") == "ran"
    broken = packs["fl_broken_pack"].error
    assert "MissingComfyFeature" in broken and "'fl_broken_pack'" in broken
    assert "comfy.model_base.Flux" in broken
    assert set(packs["fl_utility_pack"].nodes) == {
        "ImageResizeFL",
        "MaskPreviewFL",
        "SamplerSelectorFL",
        "NotifyFL",
        "AnySwitchFL",
        "DisplayAnyFL",
        "RandomFloatFL",
        "RepeatFL",
        "ClampV3FL",
    }
    assert set(packs["fl_v3_pack"].nodes) == {"FL_InvertV3", "FL_LabelV3"}
    async with serve_packs(services) as client:
        listed = await (await client.get("/api/fluxloom/packs")).json()
        assert listed["loaded"] == 3 and listed["failed"] == 1
        failed = [p for p in listed["packs"] if not p["loaded"]]
        assert failed[0]["name"] == "fl_broken_pack" and "comfy.model_base" in failed[0]["error"]
        # Routes added at import: through the route table (plain and /api) and through `app.router`.
        assert await (await client.get("/fl_utility/checkpoints")).json() == []
        assert await (await client.get("/api/fl_utility/checkpoints")).json() == []
        assert await (await client.get("/fl_utility/echo?text=hi")).json() == {"echo": "hi"}
        # WEB_DIRECTORY is served and listed.
        assert "/extensions/fl_utility_pack/utility.js" in await (await client.get("/extensions")).json()
        assert "fl_utility_pack" in await (await client.get("/extensions/fl_utility_pack/utility.js")).text()
        info = await (await client.get("/object_info")).json()
        selector = info["SamplerSelectorFL"]
        assert (
            selector["output"] == ["COMBO", "COMBO"]
            and selector["python_module"] == "custom_nodes.fl_utility_pack"
        )
        assert (
            selector["input"]["required"]["sampler_name"][0]
            == info["KSampler"]["input"]["required"]["sampler_name"][0]
        )
        assert (
            info["AnySwitchFL"]["output"] == ["*"]
            and info["DisplayAnyFL"]["input"]["required"]["source"][0] == "*"
        )
        assert info["FL_InvertV3"]["input"]["required"]["mode"][1]["options"] == ["rgb", "luma"]
        assert info["ImageResizeFL"]["display_name"] == "ImageResizeFL (FL)"


@pytest.mark.asyncio
async def test_fixture_nodes_run_through_the_server(tmp_path):
    services, _ = load(tmp_path, [PACKS])
    image_file(Path(services.settings.input_dir), "red.png")
    prompt = {
        "load": {"class_type": "LoadImage", "inputs": {"image": "red.png"}},
        "resize": {
            "class_type": "ImageResizeFL",
            "inputs": {"image": ["load", 0], "width": 8, "height": 6, "method": "area"},
        },
        # Wildcard sockets of both forms take an IMAGE and pass it on.
        "switch": {"class_type": "AnySwitchFL", "inputs": {"any_2": ["resize", 0]}},
        "show": {"class_type": "DisplayAnyFL", "inputs": {"source": ["switch", 0]}},
        "v3": {"class_type": "FL_InvertV3", "inputs": {"image": ["switch", 0], "amount": 1.0, "mode": "rgb"}},
        "width": {"class_type": "DisplayAnyFL", "inputs": {"source": ["v3", 1]}},
        "label": {"class_type": "FL_LabelV3", "inputs": {"text": "ab", "repeat": 2}},
        "mask": {"class_type": "MaskPreviewFL", "inputs": {"mask": ["load", 1]}},
        "notify": {"class_type": "NotifyFL", "inputs": {"text": "hello"}},
        "stamp": {"class_type": "NotifyFL", "inputs": {"text": "$stamp"}},
        "sel": {
            "class_type": "SamplerSelectorFL",
            "inputs": {"sampler_name": "euler", "scheduler": "simple"},
        },
        "repeat": {"class_type": "RepeatFL", "inputs": {"value": ["sel", 0], "count": 3}},
        "shown": {"class_type": "DisplayAnyFL", "inputs": {"source": ["repeat", 0]}},
        "clamp": {"class_type": "ClampV3FL", "inputs": {"value": 3.0, "low": 0.0, "high": 1.0}},
        "clamped": {"class_type": "DisplayAnyFL", "inputs": {"source": ["clamp", 0]}},
    }
    async with serve_packs(services) as client:
        ws = await client.ws_connect("/ws?clientId=fixture")
        await ws.receive_json()  # status
        reply = await post_prompt(client, prompt, client_id="fixture")
        assert reply["node_errors"] == {}
        messages = await until_done(ws, reply["prompt_id"])
        history = (await (await client.get(f"/history/{reply['prompt_id']}")).json())[reply["prompt_id"]]
        await ws.close()
    assert history["status"]["status_str"] == "success", history["status"]
    outputs = history["outputs"]
    assert outputs["show"]["text"] == ["[1, 6, 8, 3]"]
    assert outputs["label"]["text"] == ["label:abab"]
    assert outputs["width"]["text"] == ["8"]
    assert outputs["clamped"]["text"] == ["1.0"]
    assert outputs["shown"]["text"] == ["euler", "euler", "euler"]
    saved = outputs["mask"]["images"][0]
    assert saved["type"] == "temp" and "_temp_fl" in saved["filename"]
    assert (Path(services.settings.temp_dir) / saved["filename"]).is_file()
    inverted = outputs["v3"]["images"][0]
    with Image.open(Path(services.settings.temp_dir) / inverted["filename"]) as img:
        assert img.size == (8, 6) and img.getpixel((0, 0))[0] < 10  # red inverted: R ~ 5
    json_messages = [m for m in messages if isinstance(m, dict)]
    notify = [m for m in json_messages if m["type"] == "fl_utility.notify"]
    assert {"type": "fl_utility.notify", "data": {"text": "hello", "node": "notify"}} in notify
    assert outputs["stamp"]["text"] == ["stamped"]  # the pack's on-prompt handler rewrote the prompt
    resize_progress = [
        m["data"] for m in json_messages if m["type"] == "progress" and m["data"]["node"] == "resize"
    ]
    assert resize_progress and resize_progress[-1]["value"] == 1 and resize_progress[-1]["max"] == 1


@pytest.mark.asyncio
async def test_validate_inputs_and_is_changed_of_a_pack(tmp_path):
    services, _ = load(tmp_path, [PACKS])
    async with serve_packs(services) as client:
        bad = await client.post(
            "/prompt",
            json={
                "prompt": {
                    "r": {"class_type": "RandomFloatFL", "inputs": {"scale": -1.0}},
                    "s": {"class_type": "DisplayAnyFL", "inputs": {"source": ["r", 0]}},
                }
            },
        )
        assert bad.status == 400
        assert "scale must not be negative" in await bad.text()
        blank = await client.post(
            "/prompt",
            json={"prompt": {"l": {"class_type": "FL_LabelV3", "inputs": {"text": "  ", "repeat": 1}}}},
        )
        assert blank.status == 400 and "text must not be blank" in await blank.text()
        prompt = {
            "r": {"class_type": "RandomFloatFL", "inputs": {"scale": 1.0}},
            "s": {"class_type": "DisplayAnyFL", "inputs": {"source": ["r", 0]}},
        }
        ws = await client.ws_connect("/ws?clientId=c")
        await ws.receive_json()
        texts = []
        for _ in range(2):
            reply = await post_prompt(client, prompt, client_id="c")
            await until_done(ws, reply["prompt_id"])
            history = await (await client.get(f"/history/{reply['prompt_id']}")).json()
            texts.append(history[reply["prompt_id"]]["outputs"]["s"]["text"][0])
        await ws.close()
    assert texts[0] != texts[1]  # NaN IS_CHANGED: the random node ran again


@pytest.mark.asyncio
async def test_progress_bar_previews_reach_the_client_as_png_frames(tmp_path):
    services, _ = load(tmp_path, [PACKS])
    image_file(Path(services.settings.input_dir), "red.png", (5, 4))
    prompt = {
        "load": {"class_type": "LoadImage", "inputs": {"image": "red.png"}},
        "ws": {"class_type": "FLSaveImageWebsocket", "inputs": {"images": ["load", 0]}},
        "builtin": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["load", 0]}},
    }
    async with serve_packs(services) as client:
        ws = await client.ws_connect("/ws?clientId=pics")
        await ws.receive_json()
        reply = await post_prompt(client, prompt, client_id="pics")
        messages = await until_done(ws, reply["prompt_id"])
        await ws.close()
    frames = [m for m in messages if isinstance(m, bytes)]
    assert len(frames) == 2
    for frame in frames:
        assert struct.unpack(">II", frame[:8]) == (1, 2)  # preview image, PNG
        import io

        with Image.open(io.BytesIO(frame[8:])) as img:
            assert img.format == "PNG" and img.size == (5, 4) and img.getpixel((0, 0)) == (250, 10, 10)


@pytest.mark.asyncio
async def test_pack_folder_of_an_existing_install_with_relative_imports(tmp_path):
    """A ComfyUI install's custom_nodes folder named in extra_model_paths.yaml loads beside ours."""
    comfy = tmp_path / "ComfyUI" / "custom_nodes"
    shutil.copytree(PACKS / "fl_utility_pack", comfy / "borrowed_pack")
    (comfy / "borrowed_pack" / "py" / "extra.py").write_text("VALUE = 7\n")
    (comfy / "borrowed_pack" / "__init__.py").write_text(
        textwrap.dedent("""
        from .py import logic_nodes
        from .py.extra import VALUE
        NODE_CLASS_MAPPINGS = {f"Borrowed{VALUE}": logic_nodes.AnySwitchFL}
    """)
    )
    ours = tmp_path / "ours"
    ours.mkdir()
    shutil.copy(PACKS / "fl_websocket_save.py", ours / "single.py")
    yaml = tmp_path / "extra_model_paths.yaml"
    yaml.write_text(f"comfyui:\n  base_path: {tmp_path / 'ComfyUI'}\n  custom_nodes: custom_nodes\n")
    paths = ModelPaths.from_models_dir(tmp_path / "models", [yaml])
    folders = [ours, *paths.folders["custom_nodes"]]
    registry = build_registry()
    report = load_custom_nodes(folders, registry)
    assert {p.name: p.nodes for p in report.packs} == {
        "single": ("FLSaveImageWebsocket",),
        "borrowed_pack": ("Borrowed7",),
    }
    assert registry["Borrowed7"].schema.python_module == "custom_nodes.borrowed_pack"


def test_folders_packs_add_reach_our_model_paths(tmp_path):
    services, _ = load(tmp_path, [PACKS])
    models = Path(services.settings.models_dir)
    (models / "fl_loras").mkdir(parents=True)
    (models / "fl_loras" / "style.safetensors").write_bytes(b"x")
    merged = with_pack_folders(services.node_services).model_paths
    assert merged.list_models("loras") == ["style.safetensors"]  # what our LoRA loaders offer
    assert merged.folders_for("luts") == (models.resolve() / "luts",)


def test_a_pack_that_exits_or_redefines_a_node_fails_alone(tmp_path):
    (tmp_path / "a_first.py").write_text(
        textwrap.dedent("""
        class Node:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {}}
            RETURN_TYPES = ("INT",)
            FUNCTION = "f"
            def f(self):
                return (1,)
        NODE_CLASS_MAPPINGS = {"SharedName": Node}
    """)
    )
    (tmp_path / "b_second.py").write_text((tmp_path / "a_first.py").read_text().replace("(1,)", "(2,)"))
    (tmp_path / "c_exits.py").write_text("import sys\nsys.exit('bye')\n")
    (tmp_path / "d_last.py").write_text((tmp_path / "a_first.py").read_text().replace("SharedName", "Last"))
    registry = build_registry()
    report = {p.name: p for p in load_custom_nodes(tmp_path, registry).packs}
    assert report["a_first"].nodes == ("SharedName",) and report["d_last"].nodes == ("Last",)
    assert "already defined by custom_nodes.a_first" in report["b_second"].error
    assert report["c_exits"].error == "SystemExit: bye"
    assert registry["SharedName"].origin.RELATIVE_PYTHON_MODULE == "custom_nodes.a_first"


def test_a_built_in_node_cannot_be_replaced(tmp_path):
    (tmp_path / "greedy.py").write_text(
        textwrap.dedent("""
        class Fake:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {}}
            RETURN_TYPES = ()
            FUNCTION = "f"
            def f(self):
                return ()
        NODE_CLASS_MAPPINGS = {"SaveImage": Fake, "FakeOwn": Fake}
    """)
    )
    registry = build_registry()
    report = load_custom_nodes(tmp_path, registry)
    assert report.packs[0].nodes == ("FakeOwn",) and registry["SaveImage"].source == "nodes"
