"""Edits that must not load models again: a prompt edit re-runs text encoding and what follows it,
with every model taken from the executor's cache and still placed; a LoRA strength edit re-patches
the cached transformer without reading the LoRA file again."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from settings import Settings
from tests.test_workflows import load, shrink

LOADERS = {
    "UNETLoader",
    "DualCLIPLoader",
    "CLIPLoader",
    "VAELoader",
    "CheckpointLoaderSimple",
    "LoraLoader",
    "LoraLoaderModelOnly",
}


def build(models: Path, out: Path, limit_gb: float | None = None) -> Any:
    import main

    return main.build_app(
        Settings(models_dir=models, output_dir=out, temp_dir=out / "t", vram_limit_gb=limit_gb),
        load_packs=False,
    )


def ran_types(prompt: dict[str, Any], result: Any) -> set[str]:
    return {prompt[node_id]["class_type"] for node_id in result.ran}


@pytest.mark.parametrize("limit_gb", [None, 6e6 / (1 << 30)], ids=["unlimited", "6MB"])
def test_a_text_edit_reruns_encoding_and_sampling_with_no_model_loads(demo_models_dir, tmp_path, limit_gb):
    app = build(demo_models_dir, tmp_path, limit_gb)
    prompt = shrink(load("flux_dev_txt2img.json"))
    app.executor.run_prompt(copy.deepcopy(prompt), prompt_id="a")
    memory = app.services.memory
    placed = memory.stats.loads
    edited = copy.deepcopy(prompt)
    edited["4"]["inputs"]["text"] = "a blue fox"
    result = app.executor.run_prompt(edited, prompt_id="b")
    ran = ran_types(edited, result)
    assert not ran & LOADERS
    assert {"CLIPTextEncode", "KSampler", "VAEDecode", "SaveImage"} <= ran
    assert ran <= {
        "CLIPTextEncode",
        "FluxGuidance",
        "ConditioningZeroOut",
        "KSampler",
        "VAEDecode",
        "SaveImage",
    }
    if limit_gb is None:
        assert memory.stats.loads == placed  # nothing even moved: every model stayed placed


def test_a_lora_strength_edit_repatches_without_reading_the_file(demo_models_dir, tmp_path, monkeypatch):
    app = build(demo_models_dir, tmp_path)
    lora = demo_models_dir / "loras" / "tiny-diffusers.safetensors"
    if "LoraLoaderModelOnly" not in app.registry or not lora.is_file():
        pytest.skip("LoraLoaderModelOnly and demo LoRA files are not available yet")
    import models.lora.load as lora_load

    reads: list[Path] = []
    original = lora_load.read_lora

    def counting(path: Path) -> Any:
        reads.append(Path(path))
        return original(path)

    monkeypatch.setattr(lora_load, "read_lora", counting)
    prompt = shrink(load("flux_dev_txt2img.json"))
    prompt["30"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["1", 0], "lora_name": lora.name, "strength_model": 1.0},
    }
    prompt["8"]["inputs"]["model"] = ["30", 0]
    app.executor.run_prompt(copy.deepcopy(prompt), prompt_id="a")
    memory = app.services.memory
    first_reads, patched = len(reads), memory.stats.patched_tensors
    assert first_reads == 1
    assert patched > 0  # patches applied on placement
    prompt["30"]["inputs"]["strength_model"] = 0.5
    result = app.executor.run_prompt(copy.deepcopy(prompt), prompt_id="b")
    ran = ran_types(prompt, result)
    assert "LoraLoaderModelOnly" in ran and not ran & (LOADERS - {"LoraLoaderModelOnly"})
    assert len(reads) == first_reads  # the file was not read again
    assert memory.stats.patched_tensors > patched  # re-patched at the new strength


def test_models_the_executor_cache_drops_are_released(demo_models_dir, tmp_path):
    import gc

    app = build(demo_models_dir, tmp_path)
    app.executor.run_prompt(shrink(load("flux_dev_txt2img.json")), prompt_id="a")
    memory = app.services.memory
    assert memory.tracked() == 4 and memory.resident_bytes > 0  # transformer, CLIP-L, T5, VAE
    app.executor.cache.clear()
    gc.collect()
    assert memory.tracked() == 0 and memory.resident_bytes == 0
