"""Vision towers, Redux and their nodes.

Towers load from ComfyUI-style single files and match transformers' own models loaded with
from_pretrained (and their image processors, within resampling tolerance); Redux matches a float64
reference of §9.2; StyleModelApply's attn_bias at strength 0 removes the Redux tokens' influence;
ComfyUI's official flux_redux_model_example template runs unchanged on the tiny demo models.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    CLIPImageProcessor,
    CLIPVisionModelWithProjection,
    SiglipImageProcessor,
    SiglipVisionModel,
)

from models.control.redux import load_redux
from models.tiny.control import TINY_CLIP_VISION, TINY_SIGLIP
from models.vision.load import load_vision_tower
from models.vision.preprocess import vision_preprocess
from models.vision.towers import CLIP_VISION, SIGLIP, encode_pixels
from nodes.control.vision import ClipVisionHandle, StyleModelHandle, append_style, encode_image, style_tokens
from settings import Settings

CTX = SimpleNamespace(services=SimpleNamespace(memory=None))  # nodes driven directly: no memory manager
IMAGE = torch.rand(2, 300, 260, 3, generator=torch.Generator().manual_seed(4))


def _pil(image: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray((img.numpy() * 255).round().astype(np.uint8)) for img in image]


@pytest.mark.parametrize("name", ["clip_vision_l.safetensors", "sigclip_vision_patch14_384.safetensors"])
def test_towers_match_transformers(demo_models_dir, tmp_path, name):
    loaded = load_vision_tower(demo_models_dir / "clip_vision" / name, compute_dtype=torch.float32)
    params = loaded.params
    assert params == (TINY_CLIP_VISION if params.family == CLIP_VISION else TINY_SIGLIP)
    # the same weights through transformers' own loading (a saved folder)
    loaded.module.save_pretrained(tmp_path / "hf")
    cls = CLIPVisionModelWithProjection if params.family == CLIP_VISION else SiglipVisionModel
    reference = cls.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    if params.family == CLIP_VISION:
        processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
        ours = vision_preprocess(IMAGE, 224, params.mean, params.std, crop=True)
    else:
        processor = SiglipImageProcessor(size={"height": 384, "width": 384})
        ours = vision_preprocess(IMAGE, 384, params.mean, params.std, crop=False)
    theirs = processor(images=_pil(IMAGE), return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().mean() < 0.03  # PIL vs torch bicubic resampling
    with torch.no_grad():
        out = encode_pixels(loaded.module, params, theirs)
        ref = reference(pixel_values=theirs, output_hidden_states=True)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, rtol=1e-5, atol=1e-5)
    if params.family == CLIP_VISION:
        torch.testing.assert_close(out.image_embeds, ref.image_embeds, rtol=1e-5, atol=1e-5)
        assert out.image_embeds.shape == (2, 32)
    else:
        assert out.last_hidden_state.shape == (2, (384 // params.patch_size) ** 2, 64)


def test_vision_encode_crop_modes_differ(demo_models_dir):
    handle = ClipVisionHandle(
        load_vision_tower(demo_models_dir / "clip_vision" / "sigclip_vision_patch14_384.safetensors")
    )
    center = encode_image(CTX, handle, IMAGE, crop=True)  # type: ignore[arg-type]
    squash = encode_image(CTX, handle, IMAGE, crop=False)  # type: ignore[arg-type]
    assert center.last_hidden_state.shape == squash.last_hidden_state.shape == (2, 64, 64)
    assert (center.last_hidden_state - squash.last_hidden_state).abs().max() > 1e-3
    assert center["last_hidden_state"] is center.last_hidden_state


def test_redux_matches_float64_reference(demo_models_dir):
    redux = load_redux(demo_models_dir / "style_models" / "flux1-redux-dev.safetensors").double()
    x = torch.randn(1, 64, 64, dtype=torch.float64)
    up, down = redux.redux_up, redux.redux_down
    h = x @ up.weight.T + up.bias
    ref = (h * torch.sigmoid(h)) @ down.weight.T + down.bias  # §9.2: down(SiLU(up(x)))
    torch.testing.assert_close(redux(x), ref, rtol=1e-12, atol=1e-12)


def test_style_model_apply_multiply_and_attn_bias():
    ctx = torch.randn(1, 5, 8)
    cond = [[ctx, {"pooled_output": torch.zeros(1, 4)}]]
    tokens = torch.randn(1, 3, 8)
    mult = append_style(cond, tokens, 0.5, "multiply")
    torch.testing.assert_close(mult[0][0], torch.cat((ctx, tokens * 0.5), dim=1))
    assert "attention_mask" not in mult[0][1]
    same = append_style(cond, tokens, 1.0, "attn_bias")  # strength 1: no mask, as ComfyUI
    assert "attention_mask" not in same[0][1]
    biased = append_style(cond, tokens, 0.25, "attn_bias")
    mask = biased[0][1]["attention_mask"]
    assert mask.shape == (1, 5 + 3 + 1, 5 + 3 + 1)
    log = torch.log(torch.tensor(0.25)).item()
    assert torch.all(mask[:, :5, 5:8] == log) and torch.all(mask[:, 8:, 5:8] == log)
    assert torch.all(mask[:, 5:8, :] == 0) and torch.all(mask[:, :5, :5] == 0)
    torch.testing.assert_close(biased[0][0][:, 5:], tokens)  # attn_bias leaves the tokens as they are


# --- through the executor: the official Redux template, unchanged -------------------------------------------

TEMPLATES = importlib.resources.files("comfyui_workflow_templates_json") / "templates"


def run_in_process(prompt: dict, models: Path, inputs: Path, outputs: Path) -> dict:
    import main
    from tests.test_workflows import Capture

    app = main.build_app(
        Settings(models_dir=models, input_dir=inputs, output_dir=outputs, temp_dir=outputs), load_packs=False
    )
    app.registry.register(Capture)
    result = app.executor.run_prompt(prompt, prompt_id="t")
    return {k: v["value"][0] for k, v in result.outputs.items() if "value" in v}


@pytest.fixture(scope="module")
def redux_inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("redux_input")
    y, x = np.mgrid[0:80, 0:96]
    for k in (1, 2):
        rgb = np.stack([x * 3 * k % 256, y * 3 % 256, (x + y) * k % 256], -1).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"flux_redux_model_example_reference_image_{k}.png")
    return folder


def redux_prompt(strength_type: str = "multiply", strength: float = 1.0, *, style: bool = True) -> dict:
    import main  # noqa: F401  (the registry the template converts against)
    from executor.workflow import ui_to_api
    from nodes.runtime.registry import build_registry

    workflow = json.loads((TEMPLATES / "flux_redux_model_example.json").read_text(encoding="utf-8"))
    api = ui_to_api(workflow, build_registry())
    api = copy.deepcopy(api)
    for node in api.values():
        inputs = node["inputs"]
        if node["class_type"] in ("EmptySD3LatentImage", "ModelSamplingFlux"):
            inputs["width"], inputs["height"] = 64, 48
        elif node["class_type"] == "BasicScheduler":
            inputs["steps"] = 2
        elif node["class_type"] == "RandomNoise":
            inputs["noise_seed"] = 1
        elif node["class_type"] == "StyleModelApply":
            inputs["strength_type"], inputs["strength"] = strength_type, strength
    if not style:  # the guider reads the FluxGuidance output directly
        for node in api.values():
            if node["class_type"] == "BasicGuider":
                node["inputs"]["conditioning"] = next(
                    [k, 0] for k, n in api.items() if n["class_type"] == "FluxGuidance"
                )
    decode = next(k for k, n in api.items() if n["class_type"] == "VAEDecode")
    api["capture"] = {"class_type": "Capture", "inputs": {"value": [decode, 0]}}
    return api


def test_official_redux_template_runs(demo_models_dir, redux_inputs, tmp_path):
    out = run_in_process(redux_prompt(), demo_models_dir, redux_inputs, tmp_path)
    image = out["capture"]
    assert image.shape == (1, 48, 64, 3) and image.std() > 0.01
    saved = list(tmp_path.glob("ComfyUI_*.png"))
    assert len(saved) == 1


def test_attn_bias_zero_removes_the_redux_tokens_influence(demo_models_dir, redux_inputs, tmp_path):
    plain = run_in_process(redux_prompt(style=False), demo_models_dir, redux_inputs, tmp_path / "a")[
        "capture"
    ]
    styled = run_in_process(redux_prompt(), demo_models_dir, redux_inputs, tmp_path / "b")["capture"]
    muted = run_in_process(redux_prompt("attn_bias", 0.0), demo_models_dir, redux_inputs, tmp_path / "c")[
        "capture"
    ]
    styled_diff = (styled - plain).abs().max().item()
    muted_diff = (muted - plain).abs().max().item()
    assert styled_diff > 0.1
    # log(0) bias: no row reads the Redux tokens; what remains is bf16 rounding of a longer sequence
    assert muted_diff < 0.02 and muted_diff < styled_diff / 20


def test_style_tokens_shape(demo_models_dir):
    handle = StyleModelHandle(load_redux(demo_models_dir / "style_models" / "flux1-redux-dev.safetensors"))
    vision = ClipVisionHandle(
        load_vision_tower(demo_models_dir / "clip_vision" / "sigclip_vision_patch14_384.safetensors")
    )
    out = encode_image(CTX, vision, IMAGE, crop=True)  # type: ignore[arg-type]
    tokens = style_tokens(CTX, handle, out)  # type: ignore[arg-type]
    assert tokens.shape == (1, 2 * 64, 64)  # both images' tokens in one row
    assert vision.vision.params.family == SIGLIP


@pytest.mark.parametrize("name", ["clip_vision_l.safetensors", "sigclip_vision_patch14_384.safetensors"])
def test_towers_load_from_transformers_folders(demo_models_dir, tmp_path, name):
    single = load_vision_tower(demo_models_dir / "clip_vision" / name)
    single.module.save_pretrained(tmp_path / "hf")  # transformers' own folder layout and key names
    folder = load_vision_tower(tmp_path / "hf")
    assert folder.params == single.params
    assert all(
        torch.equal(a, b)
        for a, b in zip(folder.module.state_dict().values(), single.module.state_dict().values())
    )
