"""ControlNet and guider nodes through the executor on tiny models.

Behaviour users rely on: strength 0, or a window that excludes every step, gives exactly the image
without the ControlNet; an active ControlNet changes it; chained ControlNets each count; the Union
type, the Alimama inpainting node and the old apply node work; adaptive guidance with threshold 1.0
is exactly CFGGuider and with a low threshold makes fewer model evaluations.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from models.control.apply import ControlApplication, ControlNetHandle
from models.control.params import DIFFUSERS, MISTOLINE, XLABS
from models.flux.denoiser import FluxPredictor
from models.patches import ModelHandle, ModelOptions, VaeHandle
from models.tiny import TINY_AE, TINY_FLUX_DEV, tiny_autoencoder, tiny_flux
from models.tiny.control import tiny_controlnet, tiny_controlnet_params
from nodes.control import controlnet as control_nodes
from nodes.sampling import guiders as guider_nodes
from tests.flux_node_helpers import g, make_executor, sampling_modules

GEN = torch.Generator().manual_seed(21)
CONTEXT = torch.randn(1, 6, TINY_FLUX_DEV.context_in_dim, generator=GEN)
POOLED = torch.randn(1, TINY_FLUX_DEV.vec_in_dim, generator=GEN)
NEG_CONTEXT = torch.randn(1, 6, TINY_FLUX_DEV.context_in_dim, generator=GEN)
IMAGE = torch.rand(1, 64, 48, 3, generator=GEN)  # IMAGE [B, H, W, C]
MASK = (torch.rand(1, 64, 48, generator=GEN) > 0.5).float()


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return make_values()


def make_values() -> dict[str, Any]:
    """Tiny model, VAE, conditionings, images and one ControlNet per family, as Given values."""
    model = ModelHandle(
        module=tiny_flux(TINY_FLUX_DEV, 0),
        params=TINY_FLUX_DEV,
        options=ModelOptions(compute_dtype=torch.float32),
    )
    ae = tiny_autoencoder(TINY_AE, 7)
    return {
        "model": model,
        "vae": VaeHandle(module=ae, params=ae.params, compute_dtype=torch.float32),
        "pos": [[CONTEXT, {"pooled_output": POOLED, "guidance": 3.5}]],
        "neg": [[NEG_CONTEXT, {"pooled_output": torch.zeros_like(POOLED), "guidance": 3.5}]],
        "image": IMAGE,
        "mask": MASK,
        "xlabs": ControlNetHandle(tiny_controlnet(tiny_controlnet_params(XLABS), 1)),
        "misto": ControlNetHandle(tiny_controlnet(tiny_controlnet_params(MISTOLINE, single=1), 2)),
        "union": ControlNetHandle(
            tiny_controlnet(tiny_controlnet_params(DIFFUSERS, single=2, num_modes=10), 3)
        ),
        "inpaint": ControlNetHandle(tiny_controlnet(tiny_controlnet_params(DIFFUSERS, hint_channels=17), 4)),
    }


def run(prompt: dict[str, Any], values: dict[str, Any], extra_modules: tuple = ()) -> torch.Tensor:
    prompt = dict(prompt)
    for key in values:
        prompt[f"given_{key}"] = {"class_type": "Given", "inputs": {"key": key}}
    prompt["out"] = {"class_type": "Capture", "inputs": {"value": ["sample", 0]}}
    modules = (*sampling_modules(), control_nodes, guider_nodes, *extra_modules)
    result = make_executor(values, *modules).run_prompt(prompt, prompt_id="t")
    return result.outputs["out"]["value"][0]["samples"]


def ksampler(positive: list, negative: list, *, cfg: float = 1.0, steps: int = 3) -> dict[str, Any]:
    return {
        "empty": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": 48, "height": 64, "batch_size": 1},
        },
        "sample": {
            "class_type": "KSampler",
            "inputs": {
                "model": g("model"),
                "seed": 5,
                "steps": steps,
                "cfg": cfg,
                "sampler_name": "euler",
                "scheduler": "simple",
                "positive": positive,
                "negative": negative,
                "latent_image": ["empty", 0],
                "denoise": 1.0,
            },
        },
    }


def apply(
    name: str,
    control: str,
    *,
    strength: float = 1.0,
    start: float = 0.0,
    end: float = 1.0,
    positive: list | None = None,
    negative: list | None = None,
    vae: bool = False,
) -> dict[str, Any]:
    inputs = {
        "positive": positive or g("pos"),
        "negative": negative or g("neg"),
        "control_net": g(control),
        "image": g("image"),
        "strength": strength,
        "start_percent": start,
        "end_percent": end,
    }
    if vae:
        inputs["vae"] = g("vae")
    return {name: {"class_type": "ControlNetApplyAdvanced", "inputs": inputs}}


def controlled(values, control: str = "xlabs", **kw: Any) -> torch.Tensor:
    prompt = apply("cn", control, vae=control in ("union", "inpaint"), **kw) | ksampler(["cn", 0], ["cn", 1])
    return run(prompt, values)


@pytest.fixture(scope="module")
def plain(values) -> torch.Tensor:
    return run(ksampler(g("pos"), g("neg")), values)


def test_strength_zero_and_empty_window_give_exactly_the_plain_image(values, plain):
    assert torch.equal(controlled(values, strength=0.0), plain)
    assert torch.equal(controlled(values, start=1.0, end=1.0), plain)  # active only at sigma 0: never
    active = controlled(values)
    assert (active - plain).abs().max() > 1e-3


@pytest.mark.parametrize("control", ["misto", "union"])
def test_other_families_act_and_respect_strength_zero(values, plain, control):
    assert torch.equal(controlled(values, control, strength=0.0), plain)
    assert (controlled(values, control) - plain).abs().max() > 1e-3


def test_chained_controlnets_both_count(values, plain):
    one = controlled(values)
    chain = apply("a", "xlabs") | apply("b", "misto", positive=["a", 0], negative=["a", 1], strength=0.7)
    both = run(chain | ksampler(["b", 0], ["b", 1]), values)
    second_off = apply("a", "xlabs") | apply("b", "misto", positive=["a", 0], negative=["a", 1], strength=0.0)
    assert torch.equal(run(second_off | ksampler(["b", 0], ["b", 1]), values), one)
    assert (both - one).abs().max() > 1e-3
    late = apply("a", "xlabs") | apply("b", "misto", positive=["a", 0], negative=["a", 1], start=1.0, end=1.0)
    assert torch.equal(run(late | ksampler(["b", 0], ["b", 1]), values), one)


def test_apply_node_chains_in_the_conditioning_dicts(values):
    from tests.flux_node_helpers import run_node

    pos, neg = run_node(
        "ControlNetApplyAdvanced",
        {"strength": 0.5, "start_percent": 0.1, "end_percent": 0.9},
        {
            "positive": values["pos"],
            "negative": values["neg"],
            "control_net": values["xlabs"],
            "image": IMAGE,
        },
        outputs=2,
        modules=(control_nodes,),
    )
    app = pos[0][1]["control"]
    assert isinstance(app, ControlApplication) and app is neg[0][1]["control"]  # one chain for both
    assert (app.strength, app.start_percent, app.end_percent, app.previous) == (0.5, 0.1, 0.9, None)
    assert "control" not in values["pos"][0][1]  # inputs untouched
    (old,) = run_node(
        "ControlNetApply",
        {"strength": 0.8},
        {"conditioning": pos, "control_net": values["misto"], "image": IMAGE},
        modules=(control_nodes,),
    )
    assert old[0][1]["control"].previous is app


def test_union_type_selects_the_mode_token(values):
    def with_type(kind: str) -> torch.Tensor:
        prompt = {
            "typed": {
                "class_type": "SetUnionControlNetType",
                "inputs": {"control_net": g("union"), "type": kind},
            }
        }
        prompt |= {
            "cn": {
                "class_type": "ControlNetApplyAdvanced",
                "inputs": {
                    "positive": g("pos"),
                    "negative": g("neg"),
                    "control_net": ["typed", 0],
                    "image": g("image"),
                    "strength": 1.0,
                    "start_percent": 0.0,
                    "end_percent": 1.0,
                    "vae": g("vae"),
                },
            }
        }
        return run(prompt | ksampler(["cn", 0], ["cn", 1]), values)

    auto, depth, tile = with_type("auto"), with_type("depth"), with_type("tile")
    assert (auto - depth).abs().max() > 1e-4 and (depth - tile).abs().max() > 1e-4


def test_alimama_inpainting_apply_runs_and_needs_the_mask(values, plain):
    def inpaint(mask_key: str) -> torch.Tensor:
        prompt = {
            "cn": {
                "class_type": "ControlNetInpaintingAliMamaApply",
                "inputs": {
                    "positive": g("pos"),
                    "negative": g("neg"),
                    "control_net": g("inpaint"),
                    "vae": g("vae"),
                    "image": g("image"),
                    "mask": g(mask_key),
                    "strength": 1.0,
                    "start_percent": 0.0,
                    "end_percent": 1.0,
                },
            }
        }
        return run(prompt | ksampler(["cn", 0], ["cn", 1]), values)

    masked = inpaint("mask")
    values = dict(values, ones=torch.ones_like(MASK))
    assert (masked - plain).abs().max() > 1e-3
    assert (masked - inpaint("ones")).abs().max() > 1e-4


def test_latent_controlnet_without_vae_fails_with_a_clear_error(values):
    prompt = apply("cn", "union") | ksampler(["cn", 0], ["cn", 1])
    with pytest.raises(Exception, match="needs a VAE"):
        run(prompt, values)


# --- guiders ---------------------------------------------------------------------------------------------


def custom(guider: dict[str, Any], steps: int = 6) -> dict[str, Any]:
    return {
        "guider": guider,
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sigmas": {
            "class_type": "BasicScheduler",
            "inputs": {"model": g("model"), "scheduler": "simple", "steps": steps, "denoise": 1.0},
        },
        "empty": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": 48, "height": 64, "batch_size": 1},
        },
        "sample": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": ["noise", 0],
                "guider": ["guider", 0],
                "sampler": ["sampler", 0],
                "sigmas": ["sigmas", 0],
                "latent_image": ["empty", 0],
            },
        },
    }


def cfg_guider(cfg: float = 3.0, model: list | None = None) -> dict[str, Any]:
    return {
        "class_type": "CFGGuider",
        "inputs": {"model": model or g("model"), "positive": g("pos"), "negative": g("neg"), "cfg": cfg},
    }


def adaptive(threshold: float, cfg: float = 3.0, **extra: Any) -> dict[str, Any]:
    return {
        "class_type": "AdaptiveGuidance",
        "inputs": {
            "model": g("model"),
            "positive": g("pos"),
            "negative": g("neg"),
            "threshold": threshold,
            "cfg": cfg,
            **extra,
        },
    }


@pytest.fixture
def evaluations(monkeypatch) -> list[int]:
    """Conditionings evaluated per transformer call (2 for a batched CFG call)."""
    counts: list[int] = []
    original = FluxPredictor.velocity

    def counting(self: FluxPredictor, x: torch.Tensor, sigma: torch.Tensor, parts: Any) -> torch.Tensor:
        counts.append(len(parts))
        return original(self, x, sigma, parts)

    monkeypatch.setattr(FluxPredictor, "velocity", counting)
    return counts


def test_adaptive_guidance_threshold_one_is_cfg_and_low_threshold_saves_calls(values, evaluations):
    reference = run(custom(cfg_guider()), values)
    cfg_evals = sum(evaluations)
    evaluations.clear()
    assert torch.equal(run(custom(adaptive(1.0)), values), reference)
    assert sum(evaluations) == cfg_evals == 12
    evaluations.clear()
    fast = run(custom(adaptive(0.90)), values)  # tiny random weights: predictions align at once
    assert sum(evaluations) < cfg_evals
    assert torch.isfinite(fast).all()


def test_adaptive_guidance_v2_disables_the_first_calls(values, evaluations):
    guider = {
        "class_type": "AdaptiveGuidanceV2",
        "inputs": {
            "model": g("model"),
            "positive": g("pos"),
            "negative": g("neg"),
            "threshold": 1.0,
            "cfg": 3.0,
            "initial_disabled_steps": 2,
        },
    }
    run(custom(guider), values)
    assert sum(evaluations) == 2 * 1 + 4 * 2


def test_dual_cfg_guider_and_cfg_zero_star(values, evaluations):
    reference = run(custom(cfg_guider()), values)
    dual = {
        "class_type": "DualCFGGuider",
        "inputs": {
            "model": g("model"),
            "cond1": g("pos"),
            "cond2": g("pos"),
            "negative": g("neg"),
            "cfg_conds": 5.0,
            "cfg_cond2_negative": 3.0,
            "style": "regular",
        },
    }
    # cond1 == cond2: the cond1 term vanishes and DualCFG is CFG(pos over neg, 3.0)
    torch.testing.assert_close(run(custom(dual), values), reference, rtol=1e-5, atol=1e-5)
    zero = {"patched": {"class_type": "CFGZeroStar", "inputs": {"model": g("model")}}}
    starred = run(zero | custom(cfg_guider(model=["patched", 0])), values)
    assert (starred - reference).abs().max() > 1e-4


def test_loaders_read_every_tiny_controlnet_file(demo_models_dir, tmp_path):
    from tests.test_control_vision import run_in_process

    names = [
        "flux-canny-controlnet-v3.safetensors",
        "mistoline_flux.dev_v1.safetensors",
        "FLUX.1-dev-Controlnet-Union.safetensors",
        "FLUX.1-dev-ControlNet-Union-Pro-2.0.safetensors",
        "FLUX.1-dev-Controlnet-Inpainting-Beta.safetensors",
    ]
    prompt: dict[str, Any] = {
        "unet": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"},
        }
    }
    for i, name in enumerate(names):
        loader = {
            "class_type": "DiffControlNetLoader",
            "inputs": {"model": ["unet", 0], "control_net_name": name},
        }
        if i % 2:
            loader = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": name}}
        prompt[f"cn{i}"] = loader
        prompt[f"cap{i}"] = {"class_type": "Capture", "inputs": {"value": [f"cn{i}", 0]}}
    out = run_in_process(prompt, demo_models_dir, tmp_path, tmp_path)
    kinds = [
        (h.params.kind, h.params.num_modes, h.params.hint_channels)
        for h in (out[f"cap{i}"] for i in range(5))
    ]
    assert kinds == [
        (XLABS, 0, 16),
        (MISTOLINE, 0, 16),
        (DIFFUSERS, 10, 16),
        (DIFFUSERS, 0, 16),
        (DIFFUSERS, 0, 17),
    ]
