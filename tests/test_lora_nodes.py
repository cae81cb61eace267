"""LoRA nodes through the executor, on the tiny demo models and LoRAs: schemas, stacking, strength 0,
strength edits without re-reading, unmapped keys in the node UI, the control LoRA, a ComfyUI template."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from executor.object_info import object_info
from executor.run import Executor
from models.patches import ClipHandle, ModelHandle
from nodes.runtime.registry import build_registry

from .lora_app import flat, image_nodes, loaders, lora, make_app, probe


@pytest.fixture
def app(demo_models_dir, tmp_path):
    return make_app(demo_models_dir, tmp_path)


def test_schemas_follow_comfyui(app):
    info = object_info(app.executor.registry, app.services)
    loader = info["LoraLoader"]
    required = loader["input"]["required"]
    assert list(required) == ["model", "clip", "lora_name", "strength_model", "strength_clip"]
    for name in ("strength_model", "strength_clip"):
        assert required[name][0] == "FLOAT"
        assert {k: required[name][1][k] for k in ("default", "min", "max", "step")} == {
            "default": 1.0,
            "min": -100.0,
            "max": 100.0,
            "step": 0.01,
        }
    assert "tiny-kohya.safetensors" in required["lora_name"][0]
    assert loader["output"] == ["MODEL", "CLIP"] and loader["display_name"] == "Load LoRA"
    assert loader["category"] == "loaders"
    only = info["LoraLoaderModelOnly"]["input"]["required"]
    assert list(only) == ["model", "lora_name", "strength_model"]
    assert list(info["ModelMergeSimple"]["input"]["required"]) == ["model1", "model2", "ratio"]
    assert list(info["ModelMergeSubtract"]["input"]["required"]) == ["model1", "model2", "multiplier"]
    flux1 = list(info["ModelMergeFlux1"]["input"]["required"])
    assert flux1[:7] == ["model1", "model2", "img_in.", "time_in.", "guidance_in", "vector_in.", "txt_in."]
    assert flux1[-1] == "final_layer." and len(flux1) == 2 + 5 + 19 + 38 + 1
    assert info["ModelMergeSimple"]["category"] == "advanced/model_merging"
    assert (
        info["CheckpointSave"]["input"]["required"]["filename_prefix"][1]["default"] == "checkpoints/ComfyUI"
    )
    assert (
        info["ModelSave"]["input"]["required"]["filename_prefix"][1]["default"] == "diffusion_models/ComfyUI"
    )
    assert (
        info["CheckpointSave"]["output_node"] and info["CheckpointSave"]["display_name"] == "Save Checkpoint"
    )


def test_stacked_loras_add_patches_in_order_and_change_the_image(app):
    base_prompt = {**loaders(), **image_nodes(["unet", 0], ["clip", 0]), **probe("m0", ["unet", 0])}
    _, plain = app(base_prompt, "plain")
    stacked = {
        **loaders(),
        "l1": lora(["unet", 0], ["clip", 0], "tiny-kohya.safetensors", 0.5, 0.7),
        "l2": lora(["l1", 0], ["l1", 1], "tiny-comfyui.safetensors", 1.0, 1.0),
        "l3": {
            "class_type": "LoraLoaderModelOnly",
            "inputs": {"model": ["l2", 0], "lora_name": "tiny-diffusers.safetensors", "strength_model": 0.8},
        },
        **image_nodes(["l3", 0], ["l2", 1]),
        **probe("m0", ["unet", 0]),
        **probe("m3", ["l3", 0]),
        **probe("c2", ["l2", 1]),
    }
    _, seen = app(stacked, "stacked")
    base, model = seen["m0"], seen["m3"]
    assert isinstance(model, ModelHandle) and model.module is base.module and base.patches == ()
    sources = [p.source for p in model.patches]
    order = ["tiny-kohya.safetensors", "tiny-comfyui.safetensors", "tiny-diffusers.safetensors"]
    assert sorted(set(sources), key=sources.index) == order  # chained in node order
    assert {p.strength for p in model.patches if p.source == order[0]} == {0.5}
    assert {p.strength for p in model.patches if p.source == order[2]} == {0.8}
    clip = seen["c2"]
    assert isinstance(clip, ClipHandle) and {p.strength for p in clip.patches} == {
        0.7
    }  # comfyui file: no TE part
    assert (seen["img"] - plain["img"]).abs().max() > 1e-3
    assert torch.isfinite(seen["img"]).all()


def test_strength_zero_gives_the_same_image_bytes(app):
    _, plain = app({**loaders(), **image_nodes(["unet", 0], ["clip", 0])}, "plain")
    prompt = {
        **loaders(),
        "l1": lora(["unet", 0], ["clip", 0], "tiny-kohya.safetensors", 0.0, 0.0),
        "l2": {
            "class_type": "LoraLoaderModelOnly",
            "inputs": {"model": ["l1", 0], "lora_name": "tiny-lokr.safetensors", "strength_model": 0.0},
        },
        **image_nodes(["l2", 0], ["l1", 1]),
    }
    _, zero = app(prompt, "zero")
    assert torch.equal(zero["img"], plain["img"])


def test_strength_edit_rereads_nothing(app):
    def prompt(strength: float) -> dict:
        return {
            **loaders(),
            "l1": lora(["unet", 0], ["clip", 0], "tiny-kohya.safetensors", strength, 1.0),
            **probe("m", ["l1", 0]),
        }

    first, seen1 = app(prompt(1.0), "a")
    second, seen2 = app(prompt(0.25), "b")
    assert app.services.loras.loads == 1  # the file was parsed once
    assert "l1" in second.ran and "unet" in second.cached and "clip" in second.cached
    assert {p.strength for p in seen2["m"].patches} == {0.25}
    # the two handles share the patch tensors: only the strength differs
    assert seen1["m"].patches[0].tensors[0] is seen2["m"].patches[0].tensors[0]


def test_unmapped_keys_reach_the_node_ui(app, demo_models_dir):
    with safe_open(str(demo_models_dir / "loras" / "tiny-kohya.safetensors"), "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    sd["lora_unet_not_a_layer.lora_down.weight"] = torch.zeros(4, 8)
    sd["lora_unet_not_a_layer.lora_up.weight"] = torch.zeros(8, 4)
    save_file(sd, str(app.extra_loras / "partly-unknown.safetensors"))
    result, seen = app(
        {
            **loaders(),
            "l1": lora(["unet", 0], ["clip", 0], "partly-unknown.safetensors"),
            **probe("m", ["l1", 0]),
        }
    )
    (text,) = result.outputs["l1"]["text"]
    assert "2 keys not applied" in text and "lora_unet_not_a_layer.lora_down.weight" in text
    assert len(seen["m"].patches) == 36  # every known key still applied
    clean, _ = app(
        {
            **loaders(),
            "l1": lora(["unet", 0], ["clip", 0], "tiny-kohya.safetensors"),
            **probe("m", ["l1", 0]),
        },
        "clean",
    )
    assert "l1" not in clean.outputs  # no message when every key maps


def test_canny_control_lora_widens_dev_to_128_inputs(app):
    prompt = {
        **loaders(),
        "l1": {
            "class_type": "LoraLoaderModelOnly",
            "inputs": {
                "model": ["unet", 0],
                "lora_name": "flux1-canny-dev-lora.safetensors",
                "strength_model": 1.0,
            },
        },
        **probe("m", ["l1", 0]),
    }
    _, seen = app(prompt)
    handle = seen["m"]
    assert handle.params.in_channels == 128
    widened = flat(handle)["img_in.weight"]
    assert widened.shape == (128, 128)
    # and it samples like Canny-dev: InstructPixToPixConditioning feeds the 16 extra latent channels
    nodes = image_nodes(["l1", 0], ["clip", 0])
    nodes["hint"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 8421504},
    }
    nodes["ip2p"] = {
        "class_type": "InstructPixToPixConditioning",
        "inputs": {"positive": ["pos", 0], "negative": ["neg", 0], "vae": ["vae", 0], "pixels": ["hint", 0]},
    }
    nodes["ks"]["inputs"] |= {"positive": ["ip2p", 0], "negative": ["ip2p", 1], "latent_image": ["ip2p", 2]}
    _, out = app({**prompt, **nodes}, "canny-image")
    assert out["img"].shape == (1, 48, 64, 3) and torch.isfinite(out["img"]).all()
    app.services.memory.free_all()  # offloading puts the base tensors back
    assert handle.module.img_in.weight.shape == (128, 64)


def test_onereward_fill_template_runs(app, tmp_path):
    """ComfyUI's image_flux.1_fill_dev_OneReward template (LoraLoaderModelOnly in a subgraph), with demo files."""
    import importlib.resources
    import json

    import numpy as np
    from PIL import Image

    from executor.workflow import ui_to_api

    templates = importlib.resources.files("comfyui_workflow_templates_json") / "templates"
    workflow = json.loads((templates / "image_flux.1_fill_dev_OneReward.json").read_text(encoding="utf-8"))
    registry = build_registry()
    api = ui_to_api(workflow, registry)
    loras = [n for n in api.values() if n["class_type"] == "LoraLoaderModelOnly"]
    assert loras and loras[0]["inputs"]["lora_name"] == "removal_timestep_alpha-2-1740.safetensors"
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    for node in api.values():
        inputs = node["inputs"]
        if node["class_type"] == "UNETLoader":
            inputs["unet_name"] = "flux1-fill-dev.safetensors"
        elif node["class_type"] == "LoraLoaderModelOnly":
            inputs["lora_name"] = "tiny-xlabs.safetensors"  # attention-only: fits the Fill model too
        elif node["class_type"] == "KSampler":
            inputs["steps"] = 2
        elif node["class_type"] == "ImagePadForOutpaint":
            for side in ("left", "top", "right", "bottom"):
                inputs[side] = min(inputs[side], 16)
        elif node["class_type"] == "LoadImage":
            rgba = np.full((48, 64, 4), 255, np.uint8)
            rgba[..., 0] = np.arange(64, dtype=np.uint8)[None, :] * 4
            rgba[10:30, 20:40, 3] = 0  # the hole to fill
            Image.fromarray(rgba, "RGBA").save(input_dir / inputs["image"])
    services = dataclasses.replace(
        app.services, settings=dataclasses.replace(app.services.settings, input_dir=input_dir)
    )
    executor = Executor(registry, services=services)
    result = executor.run_prompt(api, prompt_id="onereward")
    shown = [n for n, out in result.outputs.items() if out.get("images")]
    assert len(shown) >= 2  # the inpainting and outpainting previews
    lora_ids = [n for n, node in api.items() if node["class_type"] == "LoraLoaderModelOnly"]
    assert set(lora_ids) <= set(result.ran)
    assert all("text" not in out for out in result.outputs.values())  # every LoRA key applied
