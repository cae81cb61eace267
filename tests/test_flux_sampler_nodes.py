"""Sampler nodes on a tiny FLUX transformer through the executor, against a hand-written Euler loop.

The reference below restates ComfyUI's flow-model KSampler (noise from a CPU generator seeded with
the seed, the `simple` schedule of the shift formula in float64, CFG on x0, KSamplerX0Inpaint for
noise masks, DifferentialDiffusion's threshold) and calls only `flux_forward_latent`.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from executor import events as ev
from executor.cancel import CancelToken
from executor.errors import Interrupted
from models.flux.denoiser import process_in, process_out
from tests.flux_node_helpers import g, make_executor, run_prompt, sampling_modules, tiny_handle

MU = 1.15  # ComfyUI's default shift for guidance-distilled FLUX


def simple_sigmas(steps: int, denoise: float = 1.0, mu: float = MU, table: int = 10000) -> list[float]:
    """ComfyUI's `simple` scheduler: every (table/steps)-th entry of the table shift((i + 1) / table)."""
    total = steps if denoise >= 0.9999 else int(steps / denoise)
    times = [(table - int(k * table / total)) / table for k in range(total)]
    sigmas = [math.exp(mu) / (math.exp(mu) + 1 / t - 1) for t in times] + [0.0]
    return sigmas[-(steps + 1) :]


def reference_euler(
    handle: Any,
    latent: torch.Tensor,
    seed: int | None,
    sigmas: list[float],
    positive: tuple,
    negative: tuple | None = None,
    cfg: float = 1.0,
    mask: torch.Tensor | None = None,
    dd_strength: float | None = None,
) -> torch.Tensor:
    from models.flux.apply import flux_forward_latent

    lat = process_in(latent) if torch.count_nonzero(latent) else latent
    noise = (
        torch.zeros_like(lat)
        if seed is None
        else torch.randn(lat.shape, generator=torch.Generator().manual_seed(seed))
    )
    x = sigmas[0] * noise + (1 - sigmas[0]) * lat

    def x0_of(x_in: torch.Tensor, s: float, cond: tuple) -> torch.Tensor:
        context, pooled, guidance = cond
        v = flux_forward_latent(
            handle.module,
            x_in,
            torch.tensor([s]),
            context,
            pooled,
            guidance=None if guidance is None else torch.tensor([guidance]),
        ).float()
        return x_in - s * v

    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        m = mask
        if m is not None and dd_strength is not None:
            sigma_to = max(sigmas[-1], 1.0 / (1 + math.exp(-MU) * (10000 - 1)))  # table sigma_min
            threshold = (s - sigma_to) / (sigmas[0] - sigma_to)
            binary = (mask >= threshold).float()
            m = binary if dd_strength >= 1 else dd_strength * binary + (1 - dd_strength) * mask
        x_in = x if m is None else x * m + (s * noise + (1 - s) * lat) * (1 - m)
        x0 = x0_of(x_in, s, positive)
        if negative is not None and cfg != 1.0:
            uncond = x0_of(x_in, s, negative)
            x0 = uncond + cfg * (x0 - uncond)
        if m is not None:
            x0 = x0 * m + lat * (1 - m)
        x = x + (s_next - s) * (x - x0) / s
    return process_out(x / (1 - sigmas[-1]))  # CONST inverse noise scaling (a no-op when ending at 0)


CONTEXT = torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(11))
POOLED = torch.randn(1, 16, generator=torch.Generator().manual_seed(12))
NEG_CONTEXT = torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(13))


def conds(guidance: float = 3.5) -> dict[str, Any]:
    return {
        "pos": [[CONTEXT, {"pooled_output": POOLED, "guidance": guidance}]],
        "neg": [[NEG_CONTEXT, {"pooled_output": torch.zeros_like(POOLED)}]],
    }


def ksampler(
    latent_link: list,
    *,
    model: list | None = None,
    seed: int = 7,
    steps: int = 3,
    cfg: float = 1.0,
    denoise: float = 1.0,
    scheduler: str = "simple",
) -> dict[str, Any]:
    return {
        "class_type": "KSampler",
        "inputs": {
            "model": model or g("model"),
            "seed": seed,
            "steps": steps,
            "cfg": cfg,
            "sampler_name": "euler",
            "scheduler": scheduler,
            "positive": g("pos"),
            "negative": g("neg"),
            "latent_image": latent_link,
            "denoise": denoise,
        },
    }


@pytest.fixture(scope="module")
def handle():
    return tiny_handle(seed=1)


def test_ksampler_txt2img_and_cfg_match_the_reference(handle):
    prompt = {
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "s": ksampler(["empty", 0]),
        "out": {"class_type": "Capture", "inputs": {"value": ["s", 0]}},
        "s2": ksampler(["empty", 0], cfg=2.5),
        "out2": {"class_type": "Capture", "inputs": {"value": ["s2", 0]}},
    }
    out = run_prompt(prompt, {"model": handle, **conds()})
    zeros = torch.zeros(1, 16, 6, 8)
    pos, neg = (CONTEXT, POOLED, 3.5), (NEG_CONTEXT, torch.zeros_like(POOLED), 3.5)
    expect = reference_euler(handle, zeros, 7, simple_sigmas(3), pos)
    torch.testing.assert_close(out["out"]["samples"], expect, atol=1e-5, rtol=1e-5)
    expect = reference_euler(handle, zeros, 7, simple_sigmas(3), pos, neg, cfg=2.5)
    torch.testing.assert_close(out["out2"]["samples"], expect, atol=1e-5, rtol=1e-5)


def test_img2img_denoise_and_zero_denoise(handle):
    latent = torch.randn(1, 16, 6, 6, generator=torch.Generator().manual_seed(21))
    prompt = {
        "half": ksampler(g("latent"), denoise=0.5, steps=2),
        "none": ksampler(g("latent"), denoise=0.0),
        "o1": {"class_type": "Capture", "inputs": {"value": ["half", 0]}},
        "o2": {"class_type": "Capture", "inputs": {"value": ["none", 0]}},
    }
    out = run_prompt(prompt, {"model": handle, "latent": {"samples": latent}, **conds()})
    assert torch.equal(out["o2"]["samples"], latent)  # denoise 0 returns the input latent
    expect = reference_euler(handle, latent, 7, simple_sigmas(2, denoise=0.5), (CONTEXT, POOLED, 3.5))
    torch.testing.assert_close(out["o1"]["samples"], expect, atol=1e-5, rtol=1e-5)


def test_ksampler_advanced_step_window_without_noise(handle):
    latent = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(22))
    inputs = {
        "model": g("model"),
        "add_noise": "disable",
        "noise_seed": 5,
        "steps": 4,
        "cfg": 1.0,
        "sampler_name": "euler",
        "scheduler": "simple",
        "positive": g("pos"),
        "negative": g("neg"),
        "latent_image": g("latent"),
        "start_at_step": 1,
        "end_at_step": 3,
        "return_with_leftover_noise": "enable",
    }
    prompt = {
        "adv": {"class_type": "KSamplerAdvanced", "inputs": inputs},
        "late": {"class_type": "KSamplerAdvanced", "inputs": dict(inputs, start_at_step=4)},
        "o1": {"class_type": "Capture", "inputs": {"value": ["adv", 0]}},
        "o2": {"class_type": "Capture", "inputs": {"value": ["late", 0]}},
    }
    out = run_prompt(prompt, {"model": handle, "latent": {"samples": latent}, **conds()})
    sigmas = simple_sigmas(4)[1:4]  # steps 1..3, leftover noise kept (no forced 0 at the end)
    expect = reference_euler(handle, latent, None, sigmas, (CONTEXT, POOLED, 3.5))
    torch.testing.assert_close(out["o1"]["samples"], expect, atol=1e-5, rtol=1e-5)
    assert torch.equal(out["o2"]["samples"], latent)  # start beyond the last step: input unchanged


@pytest.mark.parametrize("dd", [None, 1.0, 0.5])
def test_noise_mask_inpainting_and_differential_diffusion(handle, dd):
    latent = torch.randn(1, 16, 4, 6, generator=torch.Generator().manual_seed(23))
    mask = torch.zeros(1, 4, 6)
    mask[:, 1:3, 2:5] = torch.tensor([0.3, 0.7, 1.0])
    prompt: dict[str, Any] = {
        "masked": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": g("latent"), "mask": g("mask")}}
    }
    model = g("model")
    if dd is not None:
        prompt["dd"] = {
            "class_type": "DifferentialDiffusion",
            "inputs": {"model": g("model"), "strength": dd},
        }
        model = ["dd", 0]
    prompt["s"] = ksampler(["masked", 0], model=model, steps=3)
    prompt["o"] = {"class_type": "Capture", "inputs": {"value": ["s", 0]}}
    out = run_prompt(prompt, {"model": handle, "latent": {"samples": latent}, "mask": mask, **conds()})
    result = out["o"]["samples"]
    expect = reference_euler(
        handle,
        latent,
        7,
        simple_sigmas(3),
        (CONTEXT, POOLED, 3.5),
        mask=mask[:, None].expand(1, 16, 4, 6),
        dd_strength=dd,
    )
    torch.testing.assert_close(result, expect, atol=1e-5, rtol=1e-5)
    keep = (mask == 0)[:, None].expand_as(latent)
    torch.testing.assert_close(result[keep], latent[keep], atol=1e-6, rtol=0)  # unmasked: unchanged
    assert not torch.allclose(result[~keep], latent[~keep])


def test_custom_sampling_nodes(handle):
    latent = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(24))
    prompt = {
        "beta": {
            "class_type": "BetaSamplingScheduler",
            "inputs": {"model": g("model"), "steps": 5, "alpha": 0.6, "beta": 0.6},
        },
        "basic": {
            "class_type": "BasicScheduler",
            "inputs": {"model": g("model"), "scheduler": "beta", "steps": 5, "denoise": 1.0},
        },
        "first": {"class_type": "SetFirstSigma", "inputs": {"sigmas": ["basic", 0], "sigma": 0.9}},
        "sel": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "cfgg": {
            "class_type": "CFGGuider",
            "inputs": {"model": g("model"), "positive": g("pos"), "negative": g("neg"), "cfg": 2.0},
        },
        "off": {"class_type": "DisableNoise", "inputs": {}},
        "adv": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": ["off", 0],
                "guider": ["cfgg", 0],
                "sampler": ["sel", 0],
                "sigmas": ["first", 0],
                "latent_image": g("latent"),
            },
        },
        "custom": {
            "class_type": "SamplerCustom",
            "inputs": {
                "model": g("model"),
                "add_noise": False,
                "noise_seed": 3,
                "cfg": 2.0,
                "positive": g("pos"),
                "negative": g("neg"),
                "sampler": ["sel", 0],
                "sigmas": ["first", 0],
                "latent_image": g("latent"),
            },
        },
    }
    for name in ("beta", "basic", "first", "adv", "custom"):
        prompt[f"o_{name}"] = {"class_type": "Capture", "inputs": {"value": [name, 0]}}
    out = run_prompt(prompt, {"model": handle, "latent": {"samples": latent}, **conds()})
    torch.testing.assert_close(out["o_beta"], out["o_basic"])
    assert out["o_first"][0] == pytest.approx(0.9) and out["o_basic"][0] == pytest.approx(1.0)  # input kept
    torch.testing.assert_close(out["o_first"][1:], out["o_basic"][1:])
    sigmas = [float(s) for s in out["o_first"]]
    expect = reference_euler(
        handle,
        latent,
        None,
        sigmas,
        (CONTEXT, POOLED, 3.5),
        (NEG_CONTEXT, torch.zeros_like(POOLED), 3.5),
        cfg=2.0,
    )
    torch.testing.assert_close(out["o_adv"]["samples"], expect, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["o_custom"]["samples"], expect, atol=1e-5, rtol=1e-5)


def test_kontext_reference_tokens_get_their_ids(handle):
    seen: list[torch.Tensor] = []
    hook = handle.module.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    try:
        refs = [torch.randn(1, 16, 4, 6), torch.randn(1, 16, 6, 2)]
        prompt = {
            "r1": {
                "class_type": "ReferenceLatent",
                "inputs": {"conditioning": g("pos"), "latent": g("ref1")},
            },
            "r2": {
                "class_type": "ReferenceLatent",
                "inputs": {"conditioning": ["r1", 0], "latent": g("ref2")},
            },
            "m": {
                "class_type": "FluxKontextMultiReferenceLatentMethod",
                "inputs": {"conditioning": ["r2", 0], "reference_latents_method": "offset"},
            },
            "empty": {
                "class_type": "EmptySD3LatentImage",
                "inputs": {"width": 32, "height": 32, "batch_size": 1},
            },
            "s": {
                "class_type": "KSampler",
                "inputs": {
                    "model": g("model"),
                    "seed": 1,
                    "steps": 1,
                    "cfg": 1.0,
                    "sampler_name": "euler",
                    "scheduler": "simple",
                    "positive": ["m", 0],
                    "negative": g("neg"),
                    "latent_image": ["empty", 0],
                    "denoise": 1.0,
                },
            },
            "o": {"class_type": "Capture", "inputs": {"value": ["s", 0]}},
        }
        run_prompt(
            prompt, {"model": handle, "ref1": {"samples": refs[0]}, "ref2": {"samples": refs[1]}, **conds()}
        )
    finally:
        hook.remove()
    (ids,) = seen
    expect = [(0, r, c) for r in range(2) for c in range(2)]  # target: 4x4 latent -> 2x2 tokens
    expect += [(1, r, c) for r in range(2) for c in range(3)]  # first reference at the origin, index 1
    # second reference: taller than wide relative to what is placed, so it goes to the right (w offset 6
    # latent pixels = 3 tokens), rows from 0
    expect += [(1, r, 3 + c) for r in range(3) for c in range(1)]
    assert ids[0].tolist() == [list(map(float, e)) for e in expect]


def test_progress_previews_and_cancel(handle):
    prompt = {
        "empty": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "s": ksampler(["empty", 0], steps=4),
        "o": {"class_type": "Capture", "inputs": {"value": ["s", 0]}},
    }
    for key in ("model", "pos", "neg"):
        prompt[f"given_{key}"] = {"class_type": "Given", "inputs": {"key": key}}
    values = {"model": handle, **conds()}
    sink = ev.ListSink()
    make_executor(values, *sampling_modules()).run_prompt(prompt, prompt_id="p", sink=sink)
    progress = [e for e in sink.of_kind("progress") if e.node_id == "s"]
    assert [(e.value, e.max) for e in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(e.preview[:2] == b"\xff\xd8" for e in progress)  # JPEG previews each step

    token = CancelToken()

    class CancelAfterFirstStep(ev.ListSink):
        def emit(self, event: Any) -> None:
            super().emit(event)
            if event.kind == "progress":
                token.cancel()

    sink = CancelAfterFirstStep()
    with pytest.raises(Interrupted):
        make_executor(values, *sampling_modules()).run_prompt(prompt, prompt_id="q", sink=sink, cancel=token)
    assert [e.value for e in sink.of_kind("progress")] == [1]
