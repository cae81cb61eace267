"""ComfyUI's official `image_flux.1_fill_dev_OneReward` template runs headless on the tiny demo models.

The template is a UI-format file with two subgraphs (inpainting, with LoraLoaderModelOnly on the
Fill transformer, and a bypassed outpainting one). It is converted as the canvas would, its model
and image names point at the demo files, and it runs through the executor: the LoRA changes the
image, and at strength 0 the image equals the one without the LoRA.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from executor.schema import ANY, Node, NodeOutput, Schema, Typed
from settings import Settings

TEMPLATE = importlib.resources.files("comfyui_workflow_templates_json") / "templates"
INPUT_IMAGE = "image_flux.1_fill_dev_OneReward_input_image.png"
LORA = "tiny-xlabs.safetensors"  # attention-only: fits the Fill transformer, whose img_in is wider


class Capture(Node):
    schema = Schema("Capture", inputs=(Typed("value", ANY),), outputs=(), is_output_node=True)

    @classmethod
    def execute(cls, value: Any) -> NodeOutput:
        return NodeOutput.of(ui={"value": [value]})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The template's input image: RGB 64x48 whose alpha hole is the region to paint (LoadImage's mask)."""
    folder = tmp_path_factory.mktemp("onereward_input")
    y, x = np.mgrid[0:48, 0:64]
    rgba = np.stack([x * 4 % 256, y * 5 % 256, (x + y) * 2 % 256, np.full_like(x, 255)], -1).astype(np.uint8)
    rgba[10:30, 16:44, 3] = 0
    Image.fromarray(rgba, "RGBA").save(folder / INPUT_IMAGE)
    return folder


def template_prompt(strength: float | None) -> dict[str, Any]:
    """The template as API prompt on demo files; `strength` None removes the LoRA (the model goes straight on)."""
    from executor.workflow import ui_to_api
    from nodes.runtime.registry import build_registry

    workflow = json.loads((TEMPLATE / "image_flux.1_fill_dev_OneReward.json").read_text(encoding="utf-8"))
    api = copy.deepcopy(ui_to_api(workflow, build_registry()))
    for node_id, node in list(api.items()):
        kind, values = node["class_type"], node["inputs"]
        if kind == "UNETLoader":
            values["unet_name"] = "flux1-fill-dev.safetensors"
        elif kind == "KSampler":
            values["steps"], values["seed"] = 2, 7
        elif kind == "LoraLoaderModelOnly":
            values["lora_name"] = LORA
            if strength is None:
                model_link = values["model"]
                for other in api.values():
                    for key, value in other["inputs"].items():
                        if value == [node_id, 0]:
                            other["inputs"][key] = model_link
                del api[node_id]
            else:
                values["strength_model"] = strength
    decode = next(k for k, n in api.items() if n["class_type"] == "VAEDecode")
    api["capture"] = {"class_type": "Capture", "inputs": {"value": [decode, 0]}}
    return api


def run(prompt: dict[str, Any], models: Path, inputs: Path, outputs: Path) -> torch.Tensor:
    import main

    settings = Settings(models_dir=models, input_dir=inputs, output_dir=outputs, temp_dir=outputs)
    app = main.build_app(settings, load_packs=False)
    app.registry.register(Capture)
    result = app.executor.run_prompt(prompt, prompt_id="onereward")
    return result.outputs["capture"]["value"][0]


def test_onereward_template_runs_with_its_lora(demo_models_dir, inputs, tmp_path):
    prompt = template_prompt(1.0)
    assert "LoraLoaderModelOnly" in {n["class_type"] for n in prompt.values()}
    with_lora = run(prompt, demo_models_dir, inputs, tmp_path / "a")
    assert with_lora.shape == (1, 48, 64, 3) and with_lora.std() > 0.01
    assert list((tmp_path / "a").glob("*.png"))  # the template's PreviewImage nodes wrote their files
    without = run(template_prompt(None), demo_models_dir, inputs, tmp_path / "b")
    muted = run(template_prompt(0.0), demo_models_dir, inputs, tmp_path / "c")
    assert torch.equal(muted, without)  # strength 0 is exactly no LoRA
    assert (with_lora - without).abs().max() > 1e-3  # and the LoRA does change the image
