"""workflows/lora_training*.json (UI format) run on the tiny demo models and a dataset folder made here.

Only sizes and step counts are shrunk; the graphs are otherwise the files users open. The txt2img
branch samples with the LoRA the same run trained (LoraModelLoader, no file in between), and the
image differs from the same branch at strength 0.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def make_lora_dataset(input_dir: Path) -> None:
    """input/lora_dataset: four 32x32 images of one motif (a red disc on green) with captions."""
    folder = input_dir / "lora_dataset"
    folder.mkdir(parents=True)
    y, x = np.mgrid[0:32, 0:32]
    for i in range(4):
        img = np.zeros((32, 32, 3), np.uint8)
        img[..., 1] = 160
        disc = (x - 16 - i) ** 2 + (y - 16) ** 2 < 81
        img[disc] = (230, 40, 40)
        Image.fromarray(img).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text(f"a red disc, view {i}")


def shrink(prompt: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(prompt)
    for node in out.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "TrainLoraNode":
            inputs.update(steps=4, learning_rate=1e-2, rank=4, gradient_checkpointing=False)
        elif kind == "FluxLoraTrainingOptions":
            inputs.update(warmup_steps=1, eval_every=2, validate_every=4, validation_steps=2, validation_width=32,
                          validation_height=32, save_every=2)  # fmt: skip
        elif kind == "EmptySD3LatentImage":
            inputs.update(width=32, height=32)
        elif kind == "KSampler":
            inputs["steps"] = 2
    return out


@pytest.fixture(scope="module")
def app(demo_models_dir, tmp_path_factory):
    import main

    root = tmp_path_factory.mktemp("lora_workflows")
    make_lora_dataset(root / "input")
    settings = Settings(models_dir=demo_models_dir, input_dir=root / "input", output_dir=root / "output",
                        temp_dir=root / "temp")  # fmt: skip
    return main.build_app(settings, load_packs=False)


def node_of(prompt: dict[str, Any], kind: str) -> str:
    (node_id,) = [k for k, v in prompt.items() if v["class_type"] == kind]
    return node_id


def test_lora_training_workflows_train_save_and_sample(app):
    import main

    prompt = shrink(main.read_workflow(ROOT / "workflows" / "lora_training_txt2img.json", app.registry,
                                       app.services)[0])  # fmt: skip
    plain = shrink(
        main.read_workflow(ROOT / "workflows" / "lora_training.json", app.registry, app.services)[0]
    )
    assert {v["class_type"] for v in plain.values()} < {v["class_type"] for v in prompt.values()}
    result = app.executor.run_prompt(prompt, prompt_id="wf")
    out = Path(app.settings.output_dir)
    loras = out / "loras"
    assert len(list(loras.glob("flux_lora_training_4_steps_*_.safetensors"))) == 1  # SaveLoRA
    assert (loras / "flux_lora_training_2_steps.safetensors").is_file()  # periodic save at step 2
    assert (loras / "flux_lora_training_2_steps.state.safetensors").is_file()
    assert len(result.outputs[node_of(prompt, "TrainLoraNode")]["images"]) == 1  # validation at step 4
    assert result.outputs[node_of(prompt, "LossGraphNode")]["images"]
    (with_lora,) = result.outputs[node_of(prompt, "SaveImage")]["images"]
    first = np.asarray(Image.open(out / with_lora["subfolder"] / with_lora["filename"]), dtype=np.float32)
    assert first.shape == (32, 32, 3)
    # the same graph at LoRA strength 0: training comes from the cache, the image differs
    prompt[node_of(prompt, "LoraModelLoader")]["inputs"]["strength_model"] = 0.0
    again = app.executor.run_prompt(prompt, prompt_id="wf0")
    assert node_of(prompt, "TrainLoraNode") in again.cached
    (without,) = again.outputs[node_of(prompt, "SaveImage")]["images"]
    second = np.asarray(Image.open(out / without["subfolder"] / without["filename"]), dtype=np.float32)
    assert np.abs(first - second).mean() > 0.5
