"""LoRA, merge and save nodes through the executor, on the tiny demo models and LoRAs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from executor.object_info import object_info
from executor.run import Executor
from executor.schema import ANY, Hidden, Node, NodeContext, NodeOutput, Schema, Typed
from models.lora.math import patched_weight
from models.memory import MemoryManager
from models.patches import ClipHandle, ModelHandle
from nodes.runtime.model_paths import ModelPaths
from nodes.runtime.registry import build_registry
from nodes.runtime.services import NodeServices
from settings import Settings

MODULES = (
    "nodes.loaders.model_files",
    "nodes.lora.loaders",
    "nodes.lora.merge",
    "nodes.lora.save",
    "nodes.conditioning.flux",
    "nodes.latent.latents",
    "nodes.sampling.ksampler",
    "nodes.image.transforms",
)


class Probe(Node):
    """Test-only output node: hands the value it receives to the test."""

    schema = Schema(
        "Probe",
        inputs=(Typed("value", ANY),),
        outputs=(),
        is_output_node=True,
        hidden=(Hidden("unique_id", "UNIQUE_ID"),),
    )
    seen: dict[str, Any] = {}

    @classmethod
    def fingerprint(cls, **inputs: Any) -> float:
        return float("nan")

    @classmethod
    def execute(cls, ctx: NodeContext, value: Any, unique_id: str) -> NodeOutput:
        cls.seen[unique_id] = value
        return NodeOutput.of()


@pytest.fixture
def extra_loras(tmp_path) -> Path:
    folder = tmp_path / "more_loras"
    folder.mkdir()
    return folder


@pytest.fixture
def app(demo_models_dir, tmp_path, extra_loras):
    config = tmp_path / "extra_model_paths.yaml"
    saved = tmp_path / "output" / "diffusion_models"
    saved.mkdir(parents=True)
    config.write_text(f"more:\n  loras: {extra_loras}\n  diffusion_models: {saved}\n")
    registry = build_registry(MODULES)
    registry.register(Probe, source="tests")
    services = NodeServices(
        settings=Settings(output_dir=tmp_path / "output"),
        model_paths=ModelPaths.from_models_dir(demo_models_dir, [config]),
        memory=MemoryManager("cpu"),
    )
    executor = Executor(registry, services=services)

    def run(prompt: dict, prompt_id: str = "p"):
        Probe.seen = {}
        return executor.run_prompt(prompt, prompt_id=prompt_id), dict(Probe.seen)

    run.executor = executor  # type: ignore[attr-defined]
    run.services = services  # type: ignore[attr-defined]
    return run


def loaders() -> dict:
    return {
        "unet": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"},
        },
        "clip": {
            "class_type": "DualCLIPLoader",
            "inputs": {
                "clip_name1": "clip_l.safetensors",
                "clip_name2": "t5xxl_fp16.safetensors",
                "type": "flux",
            },
        },
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
    }


def lora(model: list, clip: list, name: str, sm: float = 1.0, sc: float = 1.0) -> dict:
    return {
        "class_type": "LoraLoader",
        "inputs": {
            "model": model,
            "clip": clip,
            "lora_name": name,
            "strength_model": sm,
            "strength_clip": sc,
        },
    }


def image_nodes(model: list, clip: list) -> dict:
    """Text, 2-step KSampler at 64x48 and decode; the image comes back from the probe "img"."""
    return {
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": clip}},
        "neg": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["pos", 0]}},
        "lat": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "ks": {
            "class_type": "KSampler",
            "inputs": {
                "model": model,
                "seed": 3,
                "steps": 2,
                "cfg": 1.0,
                "sampler_name": "euler",
                "scheduler": "simple",
                "positive": ["pos", 0],
                "negative": ["neg", 0],
                "latent_image": ["lat", 0],
                "denoise": 1.0,
            },
        },
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}},
        "img": {"class_type": "Probe", "inputs": {"value": ["dec", 0]}},
    }


def probe(name: str, ref: list) -> dict:
    return {name: {"class_type": "Probe", "inputs": {"value": ref}}}


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


def test_unmapped_keys_reach_the_node_ui(app, extra_loras, demo_models_dir):
    with safe_open(str(demo_models_dir / "loras" / "tiny-kohya.safetensors"), "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    sd["lora_unet_not_a_layer.lora_down.weight"] = torch.zeros(4, 8)
    sd["lora_unet_not_a_layer.lora_up.weight"] = torch.zeros(8, 4)
    save_file(sd, str(extra_loras / "partly-unknown.safetensors"))
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


def _flat(handle: ModelHandle) -> dict[str, torch.Tensor]:
    by_key: dict[str, list] = {}
    for p in handle.patches:
        by_key.setdefault(p.key, []).append(p)
    return {k: patched_weight(v, by_key.get(k, ())) for k, v in handle.module.state_dict().items()}


def test_merges_are_patches_with_the_comfyui_weights(app):
    two = {
        "a": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"},
        },
        "b": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "flux1-kontext-dev.safetensors", "weight_dtype": "default"},
        },
        "bl": {
            "class_type": "LoraLoaderModelOnly",
            "inputs": {"model": ["b", 0], "lora_name": "tiny-xlabs.safetensors", "strength_model": 1.0},
        },
        "simple": {
            "class_type": "ModelMergeSimple",
            "inputs": {"model1": ["a", 0], "model2": ["bl", 0], "ratio": 0.25},
        },
        "sub": {
            "class_type": "ModelMergeSubtract",
            "inputs": {"model1": ["a", 0], "model2": ["b", 0], "multiplier": 0.5},
        },
        "add": {"class_type": "ModelMergeAdd", "inputs": {"model1": ["a", 0], "model2": ["b", 0]}},
        "f1": {
            "class_type": "ModelMergeFlux1",
            "inputs": {
                "model1": ["a", 0],
                "model2": ["b", 0],
                "img_in.": 0.0,
                "double_blocks.1.": 0.5,
                **{k: 1.0 for k in ("time_in.", "guidance_in", "vector_in.", "txt_in.", "final_layer.")},
                **{f"double_blocks.{i}.": 1.0 for i in range(19) if i != 1},
                **{f"single_blocks.{i}.": 1.0 for i in range(38)},
            },
        },
        **{
            f"p_{n}": {"class_type": "Probe", "inputs": {"value": [n, 0]}}
            for n in ("a", "b", "bl", "simple", "sub", "add", "f1")
        },
    }
    _, seen = app(two)
    a = {k: v.double() for k, v in seen["p_a"].module.state_dict().items()}
    b = {k: v.double() for k, v in seen["p_b"].module.state_dict().items()}
    b_lora = {k: v.double() for k, v in _flat(seen["p_bl"]).items()}
    checks = {
        "simple": lambda k: 0.25 * a[k] + 0.75 * b_lora[k],  # model2's own LoRA merged in too
        "sub": lambda k: a[k] - 0.5 * b[k],
        "add": lambda k: a[k] + b[k],
        "f1": lambda k: (
            b[k]
            if k.startswith("img_in.")
            else 0.5 * (a[k] + b[k])
            if k.startswith("double_blocks.1.")
            else a[k]
        ),
    }
    for name, expected in checks.items():
        handle = seen[f"p_{name}"]
        assert handle.module is seen["p_a"].module
        merged = _flat(handle)
        for key in a:
            torch.testing.assert_close(
                merged[key].double(), expected(key), rtol=1e-5, atol=1e-5, msg=f"{name} {key}"
            )


def test_checkpoint_save_and_model_save_write_the_patched_weights(app, tmp_path):
    from models.formats import load_checkpoint, load_flux_transformer

    prompt = {
        **loaders(),
        "l1": lora(["unet", 0], ["clip", 0], "tiny-kohya.safetensors", 0.6, 0.9),
        "save": {
            "class_type": "CheckpointSave",
            "inputs": {
                "model": ["l1", 0],
                "clip": ["l1", 1],
                "vae": ["vae", 0],
                "filename_prefix": "checkpoints/ComfyUI",
            },
        },
        "msave": {
            "class_type": "ModelSave",
            "inputs": {"model": ["l1", 0], "filename_prefix": "diffusion_models/ComfyUI"},
        },
        **probe("m", ["l1", 0]),
        **probe("c", ["l1", 1]),
    }
    _, seen = app(prompt, "save1")
    again = {**prompt, "l1": lora(["unet", 0], ["clip", 0], "tiny-kohya.safetensors", 0.5, 0.9)}
    app(again, "save2")  # a changed input runs the save again: the counter moves on
    out = tmp_path / "output"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "ComfyUI_00001_.safetensors",
        "ComfyUI_00002_.safetensors",
    ]
    model_file = out / "diffusion_models" / "ComfyUI_00001_.safetensors"
    with safe_open(str(model_file), "pt") as f:
        keys = list(f.keys())
        assert "prompt" in (f.metadata() or {})
    assert keys and all(k.startswith("model.diffusion_model.") for k in keys)
    handle: ModelHandle = seen["m"]
    expected = {k: v.to(torch.bfloat16) for k, v in _flat(handle).items()}
    loaded = load_flux_transformer(model_file)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key
    checkpoint = load_checkpoint(out / "checkpoints" / "ComfyUI_00001_.safetensors")
    assert dataclasses.asdict(checkpoint.flux.params) == dataclasses.asdict(handle.params)
    for key, value in checkpoint.flux.state_dict().items():
        assert torch.equal(value, expected[key]), key
    clip: ClipHandle = seen["c"]
    clip_patch = next(p for p in clip.patches if p.key.startswith("clip_l."))
    inner_key = clip_patch.key[len("clip_l.") :]
    base = clip.encoders.clip.state_dict()[inner_key]
    mine = [p for p in clip.patches if p.key == clip_patch.key]
    saved = checkpoint.text_encoders["clip_l"].module.state_dict()[inner_key]
    assert torch.equal(saved, patched_weight(base, mine).to(base.dtype))


def test_image_from_a_lora_equals_the_image_from_its_saved_model(app):
    """The memory manager's patching and ModelSave's baking give the same bf16 weights: same image bytes."""
    with_lora = {
        **loaders(),
        "l1": lora(["unet", 0], ["clip", 0], "tiny-onetrainer.safetensors", 0.9, 0.0),
        **image_nodes(["l1", 0], ["clip", 0]),
        "msave": {
            "class_type": "ModelSave",
            "inputs": {"model": ["l1", 0], "filename_prefix": "diffusion_models/baked"},
        },
    }
    _, first = app(with_lora, "lora")
    baked = {**loaders(), **image_nodes(["unet", 0], ["clip", 0])}
    baked["unet"] = {
        "class_type": "UNETLoader",
        "inputs": {"unet_name": "baked_00001_.safetensors", "weight_dtype": "default"},
    }
    _, second = app(baked, "baked")
    assert torch.equal(first["img"], second["img"])


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
    widened = _flat(handle)["img_in.weight"]
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
