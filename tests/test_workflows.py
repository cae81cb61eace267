"""The example workflows in workflows/ run end to end on the tiny demo checkpoints.

All of them run through `python main.py run` (merged into one API prompt with prefixed node ids, so one
process loads each file once), twice, in separate processes: every saved image must have the size
the graph implies, must not be flat, and must be byte-identical across the two runs (same seeds).
Sizes and step counts are shrunk for CPU speed; nothing else in the graphs changes. In-process
checks on the same graphs: img2img at denoise 0 returns the encoded input, and Fill inpainting keeps
the latent outside the mask.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from executor.schema import ANY, Node, NodeOutput, Schema, Typed
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
WIDTH, HEIGHT, STEPS = 64, 48, 2

# file -> (SaveImage prefix, expected width, height)
EXPECTED = {
    "flux_dev_txt2img.json": ("flux_dev", WIDTH, HEIGHT),
    "flux_dev_fp8_txt2img.json": ("flux_dev_fp8", WIDTH, HEIGHT),
    "flux_schnell_checkpoint_txt2img.json": ("flux_schnell", WIDTH, HEIGHT),
    "flux_dev_diffusers_txt2img.json": ("flux_dev_diffusers", WIDTH, HEIGHT),
    "flux_dev_img2img.json": ("flux_dev_img2img", WIDTH, HEIGHT),
    "flux_fill_inpaint.json": ("flux_fill_inpaint", WIDTH, HEIGHT),
    "flux_fill_outpaint.json": ("flux_fill_outpaint", WIDTH + 16, HEIGHT),
    "flux_kontext_edit.json": ("flux_kontext", WIDTH, HEIGHT),
    "flux_canny.json": ("flux_canny", WIDTH, HEIGHT),
    "flux_dev_sampler_custom_advanced.json": ("flux_dev_custom", WIDTH, HEIGHT),
    "flux_dev_lora.json": ("flux_dev_lora", WIDTH, HEIGHT),
    "flux_controlnet_xlabs_canny.json": ("flux_controlnet_xlabs", WIDTH, HEIGHT),
    "flux_controlnet_union_chain.json": ("flux_controlnet_union", WIDTH, HEIGHT),
    "flux_controlnet_inpaint.json": ("flux_controlnet_inpaint", WIDTH, HEIGHT),
    "flux_redux_style.json": ("flux_redux", WIDTH, HEIGHT),
    "flux_ip_adapter.json": ("flux_ip_adapter", WIDTH, HEIGHT),
    "flux_adaptive_guidance.json": ("flux_adaptive_guidance", WIDTH, HEIGHT),
}


def load(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / name).read_text(encoding="utf-8"))


def shrink(prompt: dict[str, Any]) -> dict[str, Any]:
    """Small sizes and 2 steps; a Kontext-scaled image (~1 megapixel) is scaled back down before encoding."""
    out = copy.deepcopy(prompt)
    for node_id, node in list(out.items()):
        kind, inputs = node["class_type"], node["inputs"]
        if kind in ("EmptySD3LatentImage", "EmptyLatentImage", "ModelSamplingFlux"):
            inputs["width"], inputs["height"] = WIDTH, HEIGHT
        elif kind in ("KSampler", "BasicScheduler"):
            inputs["steps"] = STEPS
        elif kind == "ImagePadForOutpaint":
            inputs["right"] = 16
        elif kind == "FluxKontextImageScale":
            small = f"{node_id}_small"
            out[small] = {
                "class_type": "ImageScale",
                "inputs": {
                    "image": [node_id, 0],
                    "upscale_method": "area",
                    "width": WIDTH,
                    "height": HEIGHT,
                    "crop": "disabled",
                },
            }
            for other in out.values():
                for key, value in other["inputs"].items():
                    if value == [node_id, 0] and other is not out[small]:
                        other["inputs"][key] = [small, 0]
    return out


def merge(prompts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One API prompt holding several, node ids prefixed per workflow."""
    merged = {}
    for tag, prompt in prompts.items():
        for node_id, node in prompt.items():
            node = copy.deepcopy(node)
            for key, value in node["inputs"].items():
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                    node["inputs"][key] = [f"{tag}.{value[0]}", value[1]]
            merged[f"{tag}.{node_id}"] = node
    return merged


@pytest.fixture(scope="session")
def input_dir(tmp_path_factory) -> Path:
    """example.png (RGB 64x48) and inpaint.png (the same with a transparent hole = the area to paint)."""
    folder = tmp_path_factory.mktemp("input")
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack([x * 4 % 256, y * 4 % 256, (x + y) * 2 % 256], -1).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "example.png")
    rgba = np.concatenate([rgb, np.full((HEIGHT, WIDTH, 1), 255, np.uint8)], -1)
    rgba[12:32, 20:48, 3] = 0
    Image.fromarray(rgba, "RGBA").save(folder / "inpaint.png")
    return folder


def run_cli(workflow: Path, models: Path, inputs: Path, output: Path, *flags: str) -> list[Path]:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "main.py"),
            "run",
            str(workflow),
            "--models-dir",
            str(models),
            "--input-dir",
            str(inputs),
            "--output-dir",
            str(output),
            "--custom-nodes-dir",
            str(output / "none"),
            *flags,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return [Path(line) for line in result.stdout.splitlines() if line.endswith(".png")]


def test_every_example_workflow_runs_and_is_deterministic(demo_models_dir, input_dir, tmp_path):
    assert sorted(EXPECTED) == sorted(p.name for p in WORKFLOWS.glob("flux_*.json"))
    merged = merge({name.removesuffix(".json"): shrink(load(name)) for name in EXPECTED})
    workflow = tmp_path / "all.json"
    workflow.write_text(json.dumps(merged))
    first = run_cli(workflow, demo_models_dir, input_dir, tmp_path / "out1")
    second = run_cli(workflow, demo_models_dir, input_dir, tmp_path / "out2")
    assert len(first) == len(second) == len(EXPECTED)
    for name, (prefix, width, height) in EXPECTED.items():
        (a,) = [p for p in first if p.name == f"{prefix}_00001_.png"]
        (b,) = [p for p in second if p.name == f"{prefix}_00001_.png"]
        pixels = np.asarray(Image.open(a).convert("RGB"), dtype=np.float32)
        assert pixels.shape == (height, width, 3), name
        assert pixels.std() > 1.0, f"{name}: flat image"
        assert a.read_bytes() == b.read_bytes(), f"{name}: same seed, different bytes"


class Capture(Node):
    schema = Schema("Capture", inputs=(Typed("value", ANY),), outputs=(), is_output_node=True)

    @classmethod
    def execute(cls, value: Any) -> NodeOutput:
        return NodeOutput.of(ui={"value": [value]})


def run_in_process(prompt: dict[str, Any], models: Path, inputs: Path, outputs: Path) -> dict[str, Any]:
    import main

    app = main.build_app(
        Settings(models_dir=models, input_dir=inputs, output_dir=outputs, temp_dir=outputs), load_packs=False
    )
    app.registry.register(Capture)
    result = app.executor.run_prompt(prompt, prompt_id="t")
    return {k: v["value"][0] for k, v in result.outputs.items() if "value" in v}


def test_img2img_at_denoise_zero_returns_the_encoded_input(demo_models_dir, input_dir, tmp_path):
    prompt = shrink(load("flux_dev_img2img.json"))
    prompt["8"]["inputs"]["denoise"] = 0.0
    del prompt["21"]  # SaveImage
    prompt["cap_in"] = {"class_type": "Capture", "inputs": {"value": ["10", 0]}}
    prompt["cap_out"] = {"class_type": "Capture", "inputs": {"value": ["8", 0]}}
    out = run_in_process(prompt, demo_models_dir, input_dir, tmp_path)
    assert torch.equal(out["cap_out"]["samples"], out["cap_in"]["samples"])


def test_fill_inpainting_keeps_the_latent_outside_the_mask(demo_models_dir, input_dir, tmp_path):
    from models.sampling import prepare_denoise_mask

    prompt = shrink(load("flux_fill_inpaint.json"))
    del prompt["21"]
    prompt["cap_in"] = {"class_type": "Capture", "inputs": {"value": ["12", 2]}}
    prompt["cap_out"] = {"class_type": "Capture", "inputs": {"value": ["8", 0]}}
    out = run_in_process(prompt, demo_models_dir, input_dir, tmp_path)
    before, after = out["cap_in"]["samples"], out["cap_out"]["samples"]
    mask = prepare_denoise_mask(out["cap_in"]["noise_mask"], before.shape)
    keep = mask == 0
    assert keep.any() and (~keep).any()
    torch.testing.assert_close(after[keep], before[keep], atol=1e-5, rtol=0)
    assert not torch.allclose(after[~keep], before[~keep], atol=1e-3)


def small_ui_workflow() -> dict[str, Any]:
    """workflows/default_flux.json (UI format) at the test size and step count."""
    ui = json.loads((WORKFLOWS / "default_flux.json").read_text(encoding="utf-8"))
    for node in ui["nodes"]:
        if node["type"] == "EmptySD3LatentImage":
            node["widgets_values"][:2] = [WIDTH, HEIGHT]
        elif node["type"] == "KSampler":
            node["widgets_values"][2] = STEPS
    return ui


def png_chunks(path: Path) -> dict[str, Any]:
    with Image.open(path) as image:
        return {key: json.loads(value) for key, value in image.text.items()}


def test_a_saved_png_is_a_workflow_that_runs_to_the_same_image(demo_models_dir, input_dir, tmp_path):
    ui = small_ui_workflow()
    workflow = tmp_path / "ui.json"
    workflow.write_text(json.dumps(ui))
    (first,) = run_cli(workflow, demo_models_dir, input_dir, tmp_path / "out1")
    chunks = png_chunks(first)
    assert chunks["workflow"] == ui  # the UI file as it was, so the canvas can open it again
    assert {node["class_type"] for node in chunks["prompt"].values()} >= {"KSampler", "SaveImage"}
    (second,) = run_cli(first, demo_models_dir, input_dir, tmp_path / "out2")
    assert second.read_bytes() == first.read_bytes()  # same pixels and the same embedded prompt/workflow


def test_disable_metadata_saves_plain_pngs(demo_models_dir, input_dir, tmp_path):
    prompt = shrink(load("flux_dev_txt2img.json"))
    workflow = tmp_path / "api.json"
    workflow.write_text(json.dumps(prompt))
    (with_meta,) = run_cli(workflow, demo_models_dir, input_dir, tmp_path / "out1")
    assert set(png_chunks(with_meta)) == {"prompt"}  # an API file has no UI workflow to embed
    (plain,) = run_cli(workflow, demo_models_dir, input_dir, tmp_path / "out2", "--disable-metadata")
    assert png_chunks(plain) == {}
    assert np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(with_meta)))
