"""Model folders (listing, extra_model_paths.yaml, path safety) and the loader nodes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodes.model_paths import ExtraPathsConfigError, ModelNotFound, ModelPaths, UnsafeModelPath


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- ModelPaths -------------------------------------------------------------------------------------

def test_lists_recursive_sorted_filtered_and_both_legacy_folders(tmp_path):
    root = tmp_path / "models"
    touch(root / "diffusion_models" / "b.safetensors")
    touch(root / "diffusion_models" / "sub" / "deep" / "a.sft")
    touch(root / "unet" / "legacy.ckpt")
    touch(root / "unet" / "notes.txt")
    touch(root / "diffusion_models" / ".hidden.safetensors")
    touch(root / "text_encoders" / "t5.bin")
    touch(root / "clip" / "clip_l.pth")
    paths = ModelPaths.from_models_dir(root)
    assert paths.list_models("diffusion_models") == ["b.safetensors", "legacy.ckpt", "sub/deep/a.sft"]
    assert paths.list_models("unet") == paths.list_models("diffusion_models")
    assert paths.list_models("clip") == ["clip_l.pth", "t5.bin"]
    assert paths.list_models("vae") == []  # folder does not exist
    assert paths.resolve("unet", "legacy.ckpt") == root / "unet" / "legacy.ckpt"
    assert paths.resolve("diffusion_models", "sub/deep/a.sft") == root / "diffusion_models" / "sub/deep/a.sft"
    assert paths.resolve("diffusion_models", "sub\\deep\\a.sft").name == "a.sft"  # Windows-style name


def test_diffusers_folders_are_one_entry(tmp_path):
    root = tmp_path / "models"
    pipe = root / "diffusers" / "FLUX.1-tiny"
    touch(pipe / "model_index.json", b"{}")
    touch(pipe / "transformer" / "diffusion_pytorch_model.safetensors")
    comp = root / "diffusion_models" / "flux-transformer"
    touch(comp / "config.json", b"{}")
    touch(comp / "diffusion_pytorch_model-00001-of-00002.safetensors")
    touch(comp / "diffusion_pytorch_model.safetensors.index.json", b"{}")
    touch(root / "checkpoints" / "flux1-schnell.safetensors")
    paths = ModelPaths.from_models_dir(root)
    assert paths.list_models("diffusers") == ["FLUX.1-tiny"]
    assert paths.list_models("diffusion_models") == ["flux-transformer"]
    assert paths.list_models("checkpoints") == ["FLUX.1-tiny", "flux1-schnell.safetensors"]
    assert paths.resolve("checkpoints", "FLUX.1-tiny") == pipe
    assert paths.list_models("loras") == []


@pytest.mark.parametrize("name", ["../secret.safetensors", "a/../../x.safetensors", "/etc/passwd",
                                  "C:\\x.safetensors", "", "a//b.safetensors", "./a.safetensors", "a\x00b"])
def test_names_may_not_escape(tmp_path, name):
    touch(tmp_path / "secret.safetensors")
    paths = ModelPaths.from_models_dir(tmp_path / "models")
    touch(tmp_path / "models" / "vae" / "a.safetensors")
    with pytest.raises(UnsafeModelPath):
        paths.resolve("vae", name)


def test_symlinks_leaving_the_folder_are_rejected_and_not_listed(tmp_path):
    outside = touch(tmp_path / "outside" / "evil.safetensors")
    touch(tmp_path / "outside" / "dir" / "also.safetensors")
    vae = tmp_path / "models" / "vae"
    inside = touch(vae / "real" / "ae.safetensors")
    os.symlink(outside, vae / "evil.safetensors")
    os.symlink(tmp_path / "outside" / "dir", vae / "linkdir")
    os.symlink(inside, vae / "alias.safetensors")  # stays inside: fine
    os.symlink(vae, vae / "real" / "loop")  # a loop inside the folder must not hang the listing
    paths = ModelPaths.from_models_dir(tmp_path / "models")
    assert paths.list_models("vae") == ["alias.safetensors", "real/ae.safetensors"]
    assert paths.resolve("vae", "alias.safetensors") == vae / "alias.safetensors"
    with pytest.raises(UnsafeModelPath, match="outside"):
        paths.resolve("vae", "evil.safetensors")
    with pytest.raises(UnsafeModelPath):
        paths.resolve("vae", "linkdir/also.safetensors")


def test_missing_name_names_the_searched_folders(tmp_path):
    paths = ModelPaths.from_models_dir(tmp_path)
    with pytest.raises(ModelNotFound, match="diffusion_models.*nope.safetensors.*unet"):
        paths.resolve("unet", "nope.safetensors")


def test_extra_model_paths_yaml(tmp_path, monkeypatch):
    comfy = tmp_path / "ComfyUI"
    touch(comfy / "models" / "checkpoints" / "extra.safetensors")
    touch(comfy / "models" / "unet" / "u1.safetensors")
    touch(comfy / "models" / "diffusion_models" / "u2.safetensors")
    touch(tmp_path / "mine" / "clip_l.safetensors")
    touch(tmp_path / "home" / "loras" / "style.safetensors")
    local = tmp_path / "models"
    touch(local / "checkpoints" / "local.safetensors")
    monkeypatch.setenv("MY_LORAS", str(tmp_path / "home" / "loras"))
    config = tmp_path / "conf" / "extra_model_paths.yaml"
    touch(config, (
        b"comfyui:\n"
        b"    base_path: ../ComfyUI/\n"
        b"    is_default: true\n"
        b"    checkpoints: models/checkpoints/\n"
        b"    diffusion_models: |\n"
        b"                  models/diffusion_models\n"
        b"                  models/unet\n"
        b"other:\n"
        b"    clip: ../mine\n"
        b"    loras: $MY_LORAS\n"
        b"empty:\n"
    ))
    paths = ModelPaths.from_models_dir(local, [config])
    assert paths.folders_for("checkpoints")[0] == tmp_path / "conf" / "../ComfyUI" / "models/checkpoints"
    assert paths.list_models("checkpoints") == ["extra.safetensors", "local.safetensors"]
    assert paths.list_models("diffusion_models") == ["u1.safetensors", "u2.safetensors"]
    assert paths.list_models("text_encoders") == ["clip_l.safetensors"]  # "clip" key, relative to the yaml
    assert paths.list_models("loras") == ["style.safetensors"]
    assert paths.resolve("loras", "style.safetensors").is_file()
    assert ModelPaths.from_models_dir(local).list_models("checkpoints") == ["local.safetensors"]  # immutable


@pytest.mark.parametrize("text", ["a: [unclosed", "- a\n- b\n", "s:\n  loras: [1, 2]\n", "s: 3\n"])
def test_bad_extra_config_is_a_typed_error(tmp_path, text):
    config = touch(tmp_path / "extra.yaml", text.encode())
    with pytest.raises(ExtraPathsConfigError, match="extra.yaml"):
        ModelPaths.from_models_dir(tmp_path).with_extra_config(config)


# --- loader nodes through the executor --------------------------------------------------------------

import dataclasses  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from executor.errors import NodeExecutionError, PromptValidationError  # noqa: E402
from executor.run import Executor  # noqa: E402
from executor.schema import ANY, Hidden, Node, NodeContext, NodeOutput, Schema, Typed  # noqa: E402
from models.formats.fp8 import CastLinear  # noqa: E402
from models.patches import ClipHandle, ModelHandle, VaeHandle  # noqa: E402
from nodes.registry import build_registry  # noqa: E402


class Probe(Node):
    """Test-only output node: hands the value it receives to the test through the services object."""

    schema = Schema("Probe", inputs=(Typed("value", ANY),), outputs=(), is_output_node=True,
                    hidden=(Hidden("unique_id", "UNIQUE_ID"),))

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
    registry = build_registry(("nodes.loaders", "nodes.conditioning", "nodes.latent", "nodes.sampling"))
    registry.register(Probe, source="tests")
    services = Services(ModelPaths.from_models_dir(demo_dir))
    executor = Executor(registry, services=services)

    def run_prompt(prompt: dict, prompt_id: str = "p"):
        services.probed.clear()
        result = executor.execute(prompt, prompt_id=prompt_id)
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
    assert "flux1-dev.safetensors" in unet["unet_name"][0] and "flux1-fill-dev.safetensors" in unet["unet_name"][0]
    assert unet["weight_dtype"][0] == ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
        "FLUX.1-dev-tiny", "flux1-schnell.safetensors"]
    assert info["VAELoader"]["input"]["required"]["vae_name"][0] == ["ae.safetensors"]
    dual = info["DualCLIPLoader"]["input"]
    assert dual["required"]["clip_name1"][0] == ["clip_l.safetensors", "t5xxl_fp16.safetensors",
                                                 "t5xxl_fp8_e4m3fn.safetensors"]
    assert "flux" in dual["required"]["type"][0] and "device" in dual["optional"]
    assert info["CheckpointLoaderSimple"]["output"] == ["MODEL", "CLIP", "VAE"]
    assert info["UNETLoader"]["category"] == "advanced/loaders" and info["VAELoader"]["category"] == "loaders"
    assert info["CheckpointLoaderSimple"]["display_name"] == "Load Checkpoint"


def test_unet_loader_matches_the_model_the_file_was_made_from(run):
    from models.flux.packing import make_image_ids, make_text_ids
    from models.tiny import TINY_FLUX_DEV, tiny_flux

    prompt = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors",
                                                           "weight_dtype": "default"}}, **probe("1")}
    result, probed = run(prompt)
    handle = probed["1.0"]
    assert isinstance(handle, ModelHandle) and handle.params == TINY_FLUX_DEV
    assert handle.options.source.name == "flux1-dev.safetensors" and handle.options.compute_dtype == torch.bfloat16
    ref = tiny_flux(TINY_FLUX_DEV, 0).to(torch.bfloat16)
    g = torch.Generator().manual_seed(1)
    img = torch.randn(1, 16, 64, generator=g).to(torch.bfloat16)
    txt = torch.randn(1, 8, 64, generator=g).to(torch.bfloat16)
    y = torch.randn(1, 128, generator=g).to(torch.bfloat16)
    args = (img, make_image_ids(1, 4, 4), txt, make_text_ids(1, 8), torch.tensor([0.7]), y, torch.tensor([3.5]))
    torch.testing.assert_close(handle.module(*args), ref(*args), rtol=0, atol=0)
    # same inputs again: the executor's cache returns the same handle without loading
    again, probed = run(prompt, "p2")
    assert "1" in again.cached and probed["1.0"] is handle


def test_unet_loader_fp8_choice_keeps_fp8_and_stays_close(run):
    prompt = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors",
                                                           "weight_dtype": "fp8_e4m3fn"}},
              "2": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev-fp8.safetensors",
                                                           "weight_dtype": "default"}},
              **probe("1"), **probe("2")}
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
    prompt = {"1": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "t5xxl_fp8_e4m3fn.safetensors",
                                                               "clip_name2": "clip_l.safetensors", "type": "flux"}},
              "2": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
              "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux1-schnell.safetensors"}},
              "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "FLUX.1-dev-tiny"}},
              **probe("1"), **probe("2"), **probe("3", 0), **probe("3", 1), **probe("3", 2), **probe("4", 0),
              **probe("4", 1), **probe("4", 2)}
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
    assert df_model.params.guidance_embed and isinstance(df_clip, ClipHandle) and isinstance(df_vae, VaeHandle)
    # the diffusers pipeline holds the same weights as the single files
    _, single = run({"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors",
                                                                  "weight_dtype": "default"}}, **probe("1")})
    for key, value in single["1.0"].module.state_dict().items():
        assert torch.equal(value, df_model.module.state_dict()[key]), key
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(df_clip.encoders.clip(input_ids=ids).pooler_output,
                               clip.encoders.clip(input_ids=ids).pooler_output, rtol=0, atol=0)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(df_vae.module.encode(x), vae.module.encode(x), rtol=0, atol=0)


def test_loader_errors_name_the_file_and_the_problem(run, demo_dir, tmp_path):
    wrong = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors",
                                                          "weight_dtype": "default"}}, **probe("1")}
    with pytest.raises(PromptValidationError):
        run({"1": {"class_type": "VAELoader", "inputs": {"vae_name": "../diffusion_models/flux1-dev.safetensors"}},
             **probe("1")})
    # a diffusion model in another VAE folder: the loader says what it found
    import shutil

    shutil.copy(demo_dir / "diffusion_models" / "flux1-dev.safetensors", tmp_path / "not-a-vae.safetensors")
    services = run.executor.services
    services.model_paths = services.model_paths.with_folder("vae", tmp_path)
    with pytest.raises(NodeExecutionError, match="not-a-vae.safetensors.*expected a FLUX.1 VAE, found a FLUX.1 "
                                                 "diffusion model"):
        run({"1": {"class_type": "VAELoader", "inputs": {"vae_name": "not-a-vae.safetensors"}}, **probe("1")})
    with pytest.raises(NodeExecutionError, match="type 'sdxl' is not supported"):
        run({"1": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                              "clip_name2": "t5xxl_fp16.safetensors",
                                                              "type": "sdxl"}}, **probe("1")})
    with pytest.raises(NodeExecutionError, match="two t5xxl text encoders"):
        run({"1": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "t5xxl_fp16.safetensors",
                                                              "clip_name2": "t5xxl_fp8_e4m3fn.safetensors",
                                                              "type": "flux"}}, **probe("1")})
    assert run(wrong)[1]  # the executor still works after failures


def test_schnell_checkpoint_samples_to_a_finite_varied_image(run):
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux1-schnell.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in the snow", "clip": ["1", 1]}},
        "3": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 0]}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": 4, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "simple",
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        **probe("5"), **probe("6"),
    }
    _, got = run(prompt)
    latent, image = got["5.0"], got["6.0"]
    samples = latent["samples"]
    assert samples.shape == (1, 16, 4, 4) and torch.isfinite(samples).all() and samples.std() > 1e-3
    assert image.shape == (1, 32, 32, 3) and torch.isfinite(image).all() and image.std() > 1e-4
