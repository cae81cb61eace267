"""ComfyUI's model-touching modules, the simplest pieces: comfy.sd loading from a path and
comfy.sample (noise and sampling) on our loaders and KSampler, checked against our nodes and an
independent Euler reference."""

from __future__ import annotations

import shutil

import pytest
import torch

from nodes import compat
from nodes.compat.missing import MissingComfyFeature
from nodes.runtime.model_paths import ModelPaths
from nodes.runtime.registry import build_registry
from nodes.runtime.services import NodeServices
from settings import Settings
from tests.flux_node_helpers import tiny_handle
from tests.test_flux_sampler_nodes import CONTEXT, NEG_CONTEXT, POOLED, reference_euler, simple_sigmas


@pytest.fixture
def host(tmp_path, demo_models_dir):
    settings = Settings(
        models_dir=demo_models_dir,
        output_dir=tmp_path / "out",
        temp_dir=tmp_path / "temp",
        input_dir=tmp_path / "in",
        user_dir=tmp_path / "user",
    )
    services = NodeServices(settings=settings, model_paths=ModelPaths.from_models_dir(demo_models_dir))
    compat.install(services, build_registry())
    yield services
    compat.HOST.registry = None


def test_load_checkpoint_guess_config_from_a_path(host, demo_models_dir, tmp_path):
    import comfy.sd

    import nodes

    path = demo_models_dir / "checkpoints" / "flux1-schnell.safetensors"
    model, clip, vae, clip_vision = comfy.sd.load_checkpoint_guess_config(str(path))
    ours = nodes.CheckpointLoaderSimple().load_checkpoint("flux1-schnell.safetensors")
    assert clip_vision is None
    for got, expected in zip((model, clip, vae), ours):
        assert type(got) is type(expected)
    state = model.module.state_dict()
    assert all(torch.equal(v, ours[0].module.state_dict()[k]) for k, v in state.items())
    elsewhere = tmp_path / "downloads" / "copy.safetensors"  # outside every model folder
    elsewhere.parent.mkdir()
    shutil.copy(path, elsewhere)
    model2, clip2, vae2, _ = comfy.sd.load_checkpoint_guess_config(str(elsewhere), output_vae=False)
    assert vae2 is None and type(clip2) is type(clip)
    assert all(torch.equal(v, model2.module.state_dict()[k]) for k, v in state.items())
    unet = comfy.sd.load_diffusion_model(str(demo_models_dir / "diffusion_models" / "flux1-dev.safetensors"))
    assert type(unet) is type(model)


def test_prepare_noise_is_comfyuis_draw(host):
    import comfy.sample

    latent = torch.zeros(3, 16, 4, 5)
    expected = torch.randn(latent.shape, generator=torch.manual_seed(42), dtype=torch.float32)
    torch.testing.assert_close(comfy.sample.prepare_noise(latent, 42), expected, rtol=0, atol=0)
    picked = comfy.sample.prepare_noise(latent, 42, [2, 0])
    torch.testing.assert_close(picked, torch.stack([expected[2], expected[0]]), rtol=0, atol=0)
    assert comfy.sample.fix_empty_latent_channels(None, latent) is latent


def test_sample_runs_our_ksampler_and_matches_the_reference():
    compat.install(NodeServices(settings=Settings()), build_registry())
    try:
        import comfy.sample

        handle = tiny_handle(seed=1)
        latent = torch.zeros(1, 16, 6, 8)
        positive = [[CONTEXT, {"pooled_output": POOLED, "guidance": 3.5}]]
        negative = [[NEG_CONTEXT, {"pooled_output": torch.zeros_like(POOLED)}]]
        noise = comfy.sample.prepare_noise(latent, 7)
        out = comfy.sample.sample(
            handle, noise, 3, 1.0, "euler", "simple", positive, negative, latent, seed=7
        )
        expect = reference_euler(handle, latent, 7, simple_sigmas(3), (CONTEXT, POOLED, 3.5))
        torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-5)
        with pytest.raises(MissingComfyFeature, match="noise not drawn by prepare_noise"):
            comfy.sample.sample(
                handle, torch.ones_like(latent), 3, 1.0, "euler", "simple", positive, negative, latent, seed=7
            )
    finally:
        compat.HOST.registry = None
