"""Merge and save nodes through the executor: merges are patches with ComfyUI's weights, saves bake them."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors import safe_open

from models.lora.math import patched_weight
from models.patches import ClipHandle, ModelHandle

from .lora_app import flat, image_nodes, loaders, lora, make_app, probe


@pytest.fixture
def app(demo_models_dir, tmp_path):
    return make_app(demo_models_dir, tmp_path)


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
    b_lora = {k: v.double() for k, v in flat(seen["p_bl"]).items()}
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
        merged = flat(handle)
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
    expected = {k: v.to(torch.bfloat16) for k, v in flat(handle).items()}
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
