"""Shared by the LoRA node tests: an executor over the demo models with LoRA nodes, and prompt pieces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from executor.run import Executor
from executor.schema import ANY, Hidden, Node, NodeContext, NodeOutput, Schema, Typed
from models.lora.math import patched_weight
from models.memory import MemoryManager
from models.patches import ModelHandle
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


def make_app(demo_models_dir: Path, tmp_path: Path) -> Any:
    """run(prompt, prompt_id) -> (RunResult, probed values); .executor, .services, .extra_loras.

    An extra_model_paths.yaml adds tmp_path/more_loras to the loras folders and
    tmp_path/output/diffusion_models (where ModelSave writes) to the diffusion model folders.
    """
    extra_loras = tmp_path / "more_loras"
    extra_loras.mkdir()
    saved = tmp_path / "output" / "diffusion_models"
    saved.mkdir(parents=True)
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"more:\n  loras: {extra_loras}\n  diffusion_models: {saved}\n")
    registry = build_registry(MODULES)
    registry.register(Probe, source="tests")
    services = NodeServices(
        settings=Settings(output_dir=tmp_path / "output"),
        model_paths=ModelPaths.from_models_dir(demo_models_dir, [config]),
        memory=MemoryManager("cpu"),
    )
    executor = Executor(registry, services=services)

    def run(prompt: dict, prompt_id: str = "p") -> tuple[Any, dict[str, Any]]:
        Probe.seen = {}
        return executor.run_prompt(prompt, prompt_id=prompt_id), dict(Probe.seen)

    run.executor = executor  # type: ignore[attr-defined]
    run.services = services  # type: ignore[attr-defined]
    run.extra_loras = extra_loras  # type: ignore[attr-defined]
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


def flat(handle: ModelHandle) -> dict[str, torch.Tensor]:
    by_key: dict[str, list] = {}
    for p in handle.patches:
        by_key.setdefault(p.key, []).append(p)
    return {k: patched_weight(v, by_key.get(k, ())) for k, v in handle.module.state_dict().items()}
