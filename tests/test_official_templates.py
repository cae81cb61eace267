"""ComfyUI's official FLUX.1 templates (comfyui-workflow-templates-json) run headless on the demo models.

Each UI-format template is converted as the canvas would and run by `python main.py run` unchanged,
except that model and image names point at the tiny demo files and sizes and steps are small
(`shrink`). Two FLUX.1 templates need models outside FLUX itself and are not run here: the depth
LoRA example estimates depth with Lotus, and the USO example needs ModelPatchLoader.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tests.test_workflows import HEIGHT, WIDTH, merge, run_cli, shrink

TEMPLATES = importlib.resources.files("comfyui_workflow_templates_json") / "templates"
RUN = (
    "flux_schnell.json",
    "flux_schnell_full_text_to_image.json",
    "flux_dev_checkpoint_example.json",
    "flux_dev_full_text_to_image.json",
    "flux1_krea_dev.json",
    "flux_kontext_dev_basic.json",
    "flux_fill_inpaint_example.json",
    "flux_fill_outpaint_example.json",
    "flux_canny_model_example.json",
    "flux_redux_model_example.json",
    "image_flux.1_fill_dev_OneReward.json",
)


def demo_file(class_type: str, key: str, name: str) -> str:
    """The demo-models file that stands in for a template's model file."""
    if class_type == "CheckpointLoaderSimple":
        return "flux1-schnell.safetensors"  # the all-in-one demo checkpoint
    if class_type == "UNETLoader":
        for variant in ("fill", "kontext", "canny"):
            if variant in name.lower():
                return f"flux1-{variant}-dev.safetensors"
        return "flux1-dev-fp8.safetensors" if "fp8" in name else "flux1-dev.safetensors"
    if key.startswith("clip_name") and name.startswith("t5xxl_fp8"):
        return "t5xxl_fp8_e4m3fn.safetensors"
    if class_type == "LoraLoaderModelOnly":
        return "tiny-xlabs.safetensors"  # attention-only: fits every FLUX.1 variant
    return name  # clip_l, t5xxl_fp16, ae, the Redux and SigLIP files carry the template's names


def template_prompt(name: str, inputs: Path) -> dict[str, Any]:
    from executor.workflow import ui_to_api
    from nodes.runtime.registry import build_registry

    workflow = json.loads((TEMPLATES / name).read_text(encoding="utf-8"))
    api = copy.deepcopy(ui_to_api(workflow, build_registry()))
    for node in api.values():
        kind, values = node["class_type"], node["inputs"]
        for key, value in values.items():
            if isinstance(value, str) and value.endswith(".safetensors"):
                values[key] = demo_file(kind, key, value)
        if kind == "LoadImage":
            write_input_image(inputs / values["image"])
        elif kind == "ImagePadForOutpaint":
            for side in ("left", "top", "right", "bottom"):
                values[side] = min(values[side], 16)
        elif kind == "KSampler":
            values["seed"] = 1
        elif kind == "RandomNoise":
            values["noise_seed"] = 1
    return shrink(api)


def write_input_image(path: Path) -> None:
    """WIDTH x HEIGHT; as PNG, RGBA with a transparent hole (the mask Fill templates paint)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgba = np.stack([x * 4 % 256, y * 5 % 256, (x + y) * 2 % 256, np.full_like(x, 255)], -1).astype(np.uint8)
    rgba[10:30, 16:44] = (255, 255, 255, 0)  # a sharp white box: edges for Canny, a hole for Fill
    image = Image.fromarray(rgba, "RGBA")
    (image if path.suffix.lower() == ".png" else image.convert("RGB")).save(path)


def test_official_templates_run_through_main_py_run(demo_models_dir, tmp_path):
    """All eleven merged into one API prompt and run by `python main.py run`, as a user would run them."""
    inputs = tmp_path / "input"
    inputs.mkdir()
    prompts = {}
    for name in RUN:
        tag = name.removesuffix(".json").replace(".", "_")
        prompt = template_prompt(name, inputs)
        for node in prompt.values():
            if node["class_type"] == "SaveImage":
                node["inputs"]["filename_prefix"] = tag
        prompts[tag] = prompt
    merged = merge(prompts)
    workflow = tmp_path / "templates.json"
    workflow.write_text(json.dumps(merged))
    temp = tmp_path / "temp"
    saved = run_cli(workflow, demo_models_dir, inputs, tmp_path / "out", "--temp-dir", str(temp))
    assert len(saved) == sum(n["class_type"] == "SaveImage" for n in merged.values())
    previews = sorted(temp.rglob("*.png"))  # OneReward shows its results in PreviewImage nodes only
    assert len(previews) == sum(n["class_type"] == "PreviewImage" for n in merged.values())
    for tag, prompt in prompts.items():
        if any(n["class_type"] == "SaveImage" for n in prompt.values()):
            assert any(p.name.startswith(f"{tag}_") for p in saved), f"{tag}: no image saved"
    for path in saved + previews:
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        assert pixels.std() > 1.0, f"{path.name} is flat"
