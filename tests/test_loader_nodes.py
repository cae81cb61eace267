"""Loader nodes through the executor, on the tiny demo models."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from executor.errors import NodeExecutionError, PromptValidationError
from executor.run import Executor
from executor.schema import ANY, Hidden, Node, NodeContext, NodeOutput, Schema, Typed
from models.formats.fp8 import CastLinear
from models.patches import ClipHandle, ModelHandle, VaeHandle
from nodes.runtime.model_paths import ModelPaths
from nodes.runtime.registry import build_registry


class Probe(Node):
    """Test-only output node: hands the value it receives to the test through the services object."""

    schema = Schema(
        "Probe",
        inputs=(Typed("value", ANY),),
        outputs=(),
        is_output_node=True,
        hidden=(Hidden("unique_id", "UNIQUE_ID"),),
    )

    @classmethod
    def fingerprint(cls, **inputs: Any) -> float:
        return float("nan")  # always runs, so every prompt reports what it received

    @classmethod
    def execute(cls, ctx: NodeContext, value: Any, unique_id: str) -> NodeOutput:
        ctx.services.probed[unique_id] = value
        return NodeOutput.of(ui={"type": [type(value).__name__]})


@dataclasses.dataclass
class Services:
    model_paths: ModelPaths
    probed: dict = dataclasses.field(default_factory=dict)
    memory: Any = None


@pytest.fixture
def demo_dir(demo_models_dir):
    return demo_models_dir


@pytest.fixture
def run(demo_dir):
    registry = build_registry(
        (
            "nodes.loaders.model_files",
            "nodes.conditioning.flux",
            "nodes.latent.latents",
            "nodes.sampling.ksampler",
        )
    )
    registry.register(Probe, source="tests")
    services = Services(ModelPaths.from_models_dir(demo_dir))
    executor = Executor(registry, services=services)

    def run_prompt(prompt: dict, prompt_id: str = "p"):
        services.probed.clear()
        result = executor.run_prompt(prompt, prompt_id=prompt_id)
        return result, dict(services.probed)

    run_prompt.executor = executor  # type: ignore[attr-defined]
    return run_prompt


def probe(node: str, slot: int = 0) -> dict:
    """A Probe on output `slot` of `node`; its value comes back under the key f"{node}.{slot}"."""
    return {f"{node}.{slot}": {"class_type": "Probe", "inputs": {"value": [node, slot]}}}


def test_combo_options_list_the_demo_files(run):
    from executor.object_info import object_info

    info = object_info(run.executor.registry, run.executor.services)
    unet = info["UNETLoader"]["input"]["required"]
    assert (
        "flux1-dev.safetensors" in unet["unet_name"][0]
        and "flux1-fill-dev.safetensors" in unet["unet_name"][0]
    )
    assert unet["weight_dtype"][0] == ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
        "FLUX.1-dev-tiny",
        "flux1-schnell.safetensors",
    ]
    assert info["VAELoader"]["input"]["required"]["vae_name"][0] == ["ae.safetensors"]
    dual = info["DualCLIPLoader"]["input"]
    assert dual["required"]["clip_name1"][0] == [
        "clip_l.safetensors",
        "t5xxl_fp16.safetensors",
        "t5xxl_fp8_e4m3fn.safetensors",
    ]
    assert "flux" in dual["required"]["type"][0] and "device" in dual["optional"]
    assert info["CheckpointLoaderSimple"]["output"] == ["MODEL", "CLIP", "VAE"]
    assert info["UNETLoader"]["category"] == "advanced/loaders" and info["VAELoader"]["category"] == "loaders"
    assert info["CheckpointLoaderSimple"]["display_name"] == "Load Checkpoint"


def test_unet_loader_matches_the_model_the_file_was_made_from(run):
    from models.flux.packing import make_image_ids, make_text_ids
    from models.tiny import TINY_FLUX_DEV, tiny_flux

    prompt = {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"},
        },
        **probe("1"),
    }
    result, probed = run(prompt)
    handle = probed["1.0"]
    assert isinstance(handle, ModelHandle) and handle.params == TINY_FLUX_DEV
    assert (
        handle.options.source.name == "flux1-dev.safetensors"
        and handle.options.compute_dtype == torch.bfloat16
    )
    ref = tiny_flux(TINY_FLUX_DEV, 0).to(torch.bfloat16)
    g = torch.Generator().manual_seed(1)
    img = torch.randn(1, 16, 64, generator=g).to(torch.bfloat16)
    txt = torch.randn(1, 8, 64, generator=g).to(torch.bfloat16)
    y = torch.randn(1, 128, generator=g).to(torch.bfloat16)
    args = (
        img,
        make_image_ids(1, 4, 4),
        txt,
        make_text_ids(1, 8),
        torch.tensor([0.7]),
        y,
        torch.tensor([3.5]),
    )
    torch.testing.assert_close(handle.module(*args), ref(*args), rtol=0, atol=0)
    # same inputs again: the executor's cache returns the same handle without loading
    again, probed = run(prompt, "p2")
    assert "1" in again.cached and probed["1.0"] is handle


def test_unet_loader_fp8_choice_keeps_fp8_and_stays_close(run):
    prompt = {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "fp8_e4m3fn"},
        },
        "2": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "flux1-dev-fp8.safetensors", "weight_dtype": "default"},
        },
        **probe("1"),
        **probe("2"),
    }
    _, probed = run(prompt)
    handles = [probed["1.0"], probed["2.0"]]
    for handle in handles:
        qkv = handle.module.double_blocks[0].img_attn.qkv
        assert isinstance(qkv, CastLinear) and qkv.weight.dtype == torch.float8_e4m3fn
        assert handle.options.compute_dtype == torch.bfloat16
    assert handles[0].options.weight_dtype == "fp8_e4m3fn"
    a, b = (dict(h.module.state_dict()) for h in handles)
    assert all(torch.equal(a[k].float(), b[k].float()) for k in a)  # cast on load == cast on save


def test_dual_clip_vae_and_checkpoint_loaders(run):
    prompt = {
        "1": {
            "class_type": "DualCLIPLoader",
            "inputs": {
                "clip_name1": "t5xxl_fp8_e4m3fn.safetensors",
                "clip_name2": "clip_l.safetensors",
                "type": "flux",
            },
        },
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux1-schnell.safetensors"}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "FLUX.1-dev-tiny"}},
        **probe("1"),
        **probe("2"),
        **probe("3", 0),
        **probe("3", 1),
        **probe("3", 2),
        **probe("4", 0),
        **probe("4", 1),
        **probe("4", 2),
    }
    _, got = run(prompt)
    clip, vae = got["1.0"], got["2.0"]
    ck_model, ck_clip, ck_vae = got["3.0"], got["3.1"], got["3.2"]
    df_model, df_clip, df_vae = got["4.0"], got["4.1"], got["4.2"]
    assert isinstance(clip, ClipHandle) and clip.encoders.clip is not None and clip.encoders.t5 is not None
    assert clip.encoders.t5_tokenizer is not None and clip.encoders.clip_tokenizer is not None
    assert clip.encoders.t5.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float8_e4m3fn
    assert isinstance(vae, VaeHandle) and vae.params.z_channels == 16 and vae.compute_dtype == torch.float32
    assert isinstance(ck_model, ModelHandle) and not ck_model.params.guidance_embed  # schnell
    assert isinstance(ck_clip, ClipHandle) and isinstance(ck_vae, VaeHandle)
    assert (
        df_model.params.guidance_embed and isinstance(df_clip, ClipHandle) and isinstance(df_vae, VaeHandle)
    )
    # the diffusers pipeline holds the same weights as the single files
    _, single = run(
        {
            "1": {
                "class_type": "UNETLoader",
                "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"},
            },
            **probe("1"),
        }
    )
    for key, value in single["1.0"].module.state_dict().items():
        assert torch.equal(value, df_model.module.state_dict()[key]), key
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(
        df_clip.encoders.clip(input_ids=ids).pooler_output,
        clip.encoders.clip(input_ids=ids).pooler_output,
        rtol=0,
        atol=0,
    )
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(df_vae.module.encode(x), vae.module.encode(x), rtol=0, atol=0)


def test_loader_errors_name_the_file_and_the_problem(run, demo_dir, tmp_path):
    wrong = {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"},
        },
        **probe("1"),
    }
    with pytest.raises(PromptValidationError):
        run(
            {
                "1": {
                    "class_type": "VAELoader",
                    "inputs": {"vae_name": "../diffusion_models/flux1-dev.safetensors"},
                },
                **probe("1"),
            }
        )
    # a diffusion model in another VAE folder: the loader says what it found
    import shutil

    shutil.copy(demo_dir / "diffusion_models" / "flux1-dev.safetensors", tmp_path / "not-a-vae.safetensors")
    services = run.executor.services
    services.model_paths = services.model_paths.with_folder("vae", tmp_path)
    with pytest.raises(
        NodeExecutionError,
        match="not-a-vae.safetensors.*expected a FLUX.1 VAE, found a FLUX.1 diffusion model",
    ):
        run({"1": {"class_type": "VAELoader", "inputs": {"vae_name": "not-a-vae.safetensors"}}, **probe("1")})
    with pytest.raises(NodeExecutionError, match="type 'sdxl' is not supported"):
        run(
            {
                "1": {
                    "class_type": "DualCLIPLoader",
                    "inputs": {
                        "clip_name1": "clip_l.safetensors",
                        "clip_name2": "t5xxl_fp16.safetensors",
                        "type": "sdxl",
                    },
                },
                **probe("1"),
            }
        )
    with pytest.raises(NodeExecutionError, match="two t5xxl text encoders"):
        run(
            {
                "1": {
                    "class_type": "DualCLIPLoader",
                    "inputs": {
                        "clip_name1": "t5xxl_fp16.safetensors",
                        "clip_name2": "t5xxl_fp8_e4m3fn.safetensors",
                        "type": "flux",
                    },
                },
                **probe("1"),
            }
        )
    assert run(wrong)[1]  # the executor still works after failures


def test_schnell_checkpoint_samples_to_a_finite_varied_image(run):
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux1-schnell.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in the snow", "clip": ["1", 1]}},
        "3": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 0]}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "seed": 3,
                "steps": 4,
                "cfg": 1.0,
                "sampler_name": "euler",
                "scheduler": "simple",
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        **probe("5"),
        **probe("6"),
    }
    _, got = run(prompt)
    latent, image = got["5.0"], got["6.0"]
    samples = latent["samples"]
    assert samples.shape == (1, 16, 4, 4) and torch.isfinite(samples).all() and samples.std() > 1e-3
    assert image.shape == (1, 32, 32, 3) and torch.isfinite(image).all() and image.std() > 1e-4
