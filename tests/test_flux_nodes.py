"""FLUX workflow nodes through the executor: conditioning plumbing, latents, samplers, the denoiser bridge.

Values that JSON cannot carry enter through a `Given` node (looked up in the services object) and
leave through a `Capture` output node, so every node under test runs inside the real executor.
"""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from executor.registry import NodeRegistry
from executor.run import Executor
from executor.schema import ANY, Node, NodeContext, NodeOutput, Schema, String, Typed
from models.flux.denoiser import (
    BatchedConds,
    FluxPredictor,
    batch_conds,
    mask_channels,
    prepare_conditioning,
    process_in,
    process_out,
)
from nodes.conditioning import flux as conditioning
from nodes.latent import latents as latent


class Given(Node):
    schema = Schema("Given", inputs=(String("key"),), outputs=(ANY,))

    @classmethod
    def execute(cls, ctx: NodeContext, key: str) -> tuple[Any]:
        return (ctx.services.values[key],)


class Capture(Node):
    schema = Schema("Capture", inputs=(Typed("value", ANY),), outputs=(), is_output_node=True)

    @classmethod
    def execute(cls, value: Any) -> NodeOutput:
        return NodeOutput.of(ui={"value": [value]})


def make_executor(values: dict[str, Any], *modules: Any) -> Executor:
    registry = NodeRegistry()
    for node in (Given, Capture):
        registry.register(node)
    for module in modules or (conditioning, latent):
        for node in module.NODES:
            registry.register(node)
    return Executor(registry, services=SimpleNamespace(values=values, memory=None))


def run_node(
    class_type: str,
    inputs: dict[str, Any],
    values: dict[str, Any] | None = None,
    outputs: int = 1,
    modules: tuple = (),
) -> list[Any]:
    """Run one node whose linked inputs come from `values` (name -> object); return its outputs."""
    values = dict(values or {})
    prompt: dict[str, Any] = {}
    node_inputs = dict(inputs)
    for name in values:
        prompt[f"given_{name}"] = {"class_type": "Given", "inputs": {"key": name}}
        node_inputs[name] = [f"given_{name}", 0]
    prompt["node"] = {"class_type": class_type, "inputs": node_inputs}
    for index in range(outputs):
        prompt[f"out{index}"] = {"class_type": "Capture", "inputs": {"value": ["node", index]}}
    result = make_executor(values, *modules).run_prompt(prompt, prompt_id="t")
    return [result.outputs[f"out{index}"]["value"][0] for index in range(outputs)]


def cond(tokens: int = 4, dim: int = 8, **options: Any) -> list[list[Any]]:
    gen = torch.Generator().manual_seed(tokens * 31 + dim)
    return [
        [
            torch.randn(1, tokens, dim, generator=gen),
            {"pooled_output": torch.randn(1, 6, generator=gen), **options},
        ]
    ]


# --- conditioning plumbing ----------------------------------------------------------------------


def test_flux_guidance_sets_guidance_on_a_copy():
    original = cond()
    (out,) = run_node("FluxGuidance", {"guidance": 2.5}, {"conditioning": original})
    assert out[0][1]["guidance"] == 2.5 and "guidance" not in original[0][1]
    assert out[0][0] is original[0][0]  # tensors are shared, dicts are not
    assert out[0][1]["pooled_output"] is original[0][1]["pooled_output"]


def test_zero_out_zeroes_context_and_pooled_keeps_other_keys():
    original = cond(guidance=3.0)
    (out,) = run_node("ConditioningZeroOut", {}, {"conditioning": original})
    assert torch.count_nonzero(out[0][0]) == 0 and torch.count_nonzero(out[0][1]["pooled_output"]) == 0
    assert out[0][0].shape == original[0][0].shape and out[0][1]["guidance"] == 3.0
    assert torch.count_nonzero(original[0][0]) > 0


def test_combine_concatenates_entries():
    a, b = cond(3), cond(5)
    (out,) = run_node("ConditioningCombine", {}, {"conditioning_1": a, "conditioning_2": b})
    assert len(out) == 2 and out[0][0] is a[0][0] and out[1][0] is b[0][0]


def test_timestep_range_records_percentages():
    (out,) = run_node("ConditioningSetTimestepRange", {"start": 0.2, "end": 0.7}, {"conditioning": cond()})
    assert (out[0][1]["start_percent"], out[0][1]["end_percent"]) == (0.2, 0.7)


def test_set_area_passes_through_with_a_warning(caplog):
    original = cond()
    with caplog.at_level(logging.WARNING, logger="nodes.conditioning.flux"):
        (out,) = run_node(
            "ConditioningSetArea",
            {"width": 256, "height": 128, "x": 64, "y": 8, "strength": 0.5},
            {"conditioning": original},
        )
    assert "ignores conditioning areas" in caplog.text
    assert (
        out[0][0] is original[0][0] and out[0][1]["area"] == (16, 32, 1, 8) and out[0][1]["strength"] == 0.5
    )


def test_reference_latents_chain_and_method():
    first, second = torch.randn(1, 16, 4, 6), torch.randn(1, 16, 8, 2)
    (once,) = run_node("ReferenceLatent", {}, {"conditioning": cond(), "latent": {"samples": first}})
    (twice,) = run_node("ReferenceLatent", {}, {"conditioning": once, "latent": {"samples": second}})
    assert [t is r for t, r in zip(twice[0][1]["reference_latents"], (first, second))] == [True, True]
    assert len(once[0][1]["reference_latents"]) == 1  # the earlier value is not mutated
    (none,) = run_node("ReferenceLatent", {}, {"conditioning": once})
    assert none[0][1]["reference_latents"][0] is first
    for choice, stored in (("offset", "offset"), ("index", "index"), ("uxo/uno", "uxo")):
        (out,) = run_node(
            "FluxKontextMultiReferenceLatentMethod",
            {"reference_latents_method": choice},
            {"conditioning": twice},
        )
        assert out[0][1]["reference_latents_method"] == stored


# --- latents ------------------------------------------------------------------------------------


@pytest.mark.parametrize("node", ["EmptyLatentImage", "EmptySD3LatentImage"])
def test_empty_latents_are_flux_shaped_zeros(node):
    (out,) = run_node(node, {"width": 80, "height": 48, "batch_size": 3})
    assert out["samples"].shape == (3, 16, 6, 10) and out["samples"].dtype == torch.float32
    assert torch.count_nonzero(out["samples"]) == 0


def test_set_latent_noise_mask_reshapes_and_copies():
    samples = {"samples": torch.randn(2, 16, 4, 4), "batch_index": [3, 4]}
    mask = torch.rand(2, 32, 32)
    (out,) = run_node("SetLatentNoiseMask", {}, {"samples": samples, "mask": mask})
    assert out["noise_mask"].shape == (2, 1, 32, 32) and torch.equal(out["noise_mask"][:, 0], mask)
    assert out["batch_index"] == [3, 4] and "noise_mask" not in samples


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic"])
def test_latent_upscale_matches_interpolate(method):
    x = torch.randn(1, 16, 12, 20)
    (out,) = run_node(
        "LatentUpscale",
        {"upscale_method": method, "width": 256, "height": 0, "crop": "disabled"},
        {"samples": {"samples": x}},
    )
    # height 0 keeps the aspect ratio: 256 px wide -> 32 latent columns, round(12 * 256 / 20) = 154 px -> 19 rows
    assert out["samples"].shape == (1, 16, 19, 32)
    torch.testing.assert_close(out["samples"], F.interpolate(x, size=(19, 32), mode=method))
    (by,) = run_node(
        "LatentUpscaleBy", {"upscale_method": method, "scale_by": 1.5}, {"samples": {"samples": x}}
    )
    torch.testing.assert_close(by["samples"], F.interpolate(x, size=(18, 30), mode=method))


def test_latent_upscale_center_crop():
    x = torch.arange(2 * 8 * 16, dtype=torch.float32).reshape(1, 2, 8, 16)
    (out,) = run_node(
        "LatentUpscale",
        {"upscale_method": "nearest-exact", "width": 64, "height": 64, "crop": "center"},
        {"samples": {"samples": x}},
    )
    # 16x8 cropped to the 1:1 center 8x8 (columns 4..11), then resized to 8x8: identical
    torch.testing.assert_close(out["samples"], x[:, :, :, 4:12])


def _slerp64(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    ua, ub = a / na, b / nb
    dot = float(np.clip(ua @ ub, -1, 1))
    if dot > 1 - 1e-5:
        return a
    omega = math.acos(dot)
    direction = (math.sin((1 - t) * omega) * ua + math.sin(t * omega) * ub) / math.sin(omega)
    return direction * (na * (1 - t) + nb * t)


def _bilinear_source(old: int, new: int, i: int) -> tuple[int, int, float]:
    """align_corners=False source coordinate of output i, clamped to the input like interpolate does."""
    pos = min(max((i + 0.5) * old / new - 0.5, 0.0), old - 1)
    left = math.floor(pos)
    return left, min(left + 1, old - 1), pos - left


def test_bislerp_against_float64_reference():
    x = torch.randn(1, 3, 3, 4, generator=torch.Generator().manual_seed(0))
    (out,) = run_node(
        "LatentUpscaleBy", {"upscale_method": "bislerp", "scale_by": 1.75}, {"samples": {"samples": x}}
    )  # 3x4 -> round(5.25) x 7
    src = x[0].double().permute(1, 2, 0).numpy()  # [H, W, C]
    width_pass = np.zeros((3, 7, 3))
    for r in range(3):
        for i in range(7):
            left, right, t = _bilinear_source(4, 7, i)
            width_pass[r, i] = _slerp64(src[r, left], src[r, right], t)
    expect = np.zeros((5, 7, 3))
    for j in range(5):
        top, bottom, t = _bilinear_source(3, 5, j)
        for i in range(7):
            expect[j, i] = _slerp64(width_pass[top, i], width_pass[bottom, i], t)
    np.testing.assert_allclose(out["samples"][0].permute(1, 2, 0).numpy(), expect, atol=1e-5)


def test_kontext_image_scale_picks_nearest_aspect_and_lanczos():
    image = torch.rand(1, 60, 100, 3, generator=torch.Generator().manual_seed(1))
    (out,) = run_node("FluxKontextImageScale", {}, {"image": image})
    # 100:60 = 1.667 is closest to 1328:800 = 1.660
    assert out.shape == (1, 800, 1328, 3)
    # center crop to 1.660 would drop round((100 - 99.6) / 2) = 0 columns: a plain resize
    pil = Image.fromarray((image[0].numpy() * 255).clip(0, 255).astype(np.uint8))
    expect = np.asarray(pil.resize((1328, 800), Image.Resampling.LANCZOS), dtype=np.float32) / 255
    np.testing.assert_allclose(out[0].numpy(), expect, atol=1e-6)


# --- the denoiser bridge (fake transformer forward) ---------------------------------------------


class RecordingForward:
    """Stands in for flux_forward_latent: records its inputs, returns a fixed linear velocity."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, module, x, t, context, pooled, guidance=None, **kw):
        self.calls.append({"x": x, "t": t, "context": context, "pooled": pooled, "guidance": guidance, **kw})
        return 0.5 * x[:, :16] + context.mean() + t.reshape(-1, 1, 1, 1)


def predictor(in_channels: int = 64, guidance_embed: bool = True) -> tuple[FluxPredictor, RecordingForward]:
    forward = RecordingForward()
    params = SimpleNamespace(guidance_embed=guidance_embed, vec_in_dim=6, in_channels=in_channels)
    p = FluxPredictor(
        torch.nn.Identity(),
        params,
        percent_to_sigma=lambda p: 1.0 - p,
        device=torch.device("cpu"),
        forward=forward,
    )
    return p, forward


def test_predictor_returns_x0_from_velocity_and_guidance_defaults():
    p, forward = predictor()
    x = torch.randn(2, 16, 4, 4)
    sigma = torch.tensor([0.6, 0.6])
    conds = prepare_conditioning(cond(3, 8))
    x0 = p(x, sigma, conds)
    v = 0.5 * x + conds[0].context.mean() + 0.6
    torch.testing.assert_close(x0, x - 0.6 * v)
    call = forward.calls[0]
    assert call["context"].shape == (1, 3, 8) and call["pooled"].shape == (1, 6)  # the forward broadcasts
    assert torch.equal(call["guidance"], torch.tensor([3.5, 3.5]))  # ComfyUI's default when none is set
    p(x, sigma, prepare_conditioning(cond(guidance=None)))
    assert forward.calls[-1]["guidance"] is None  # FluxDisableGuidance-style None is kept
    schnell, forward = predictor(guidance_embed=False)
    schnell(x, sigma, prepare_conditioning(cond(guidance=4.0)))
    assert forward.calls[-1]["guidance"] is None  # no guidance embedding in the model


def test_predictor_timestep_ranges_and_strength_average():
    p, forward = predictor()
    x = torch.randn(1, 16, 2, 2)
    early = cond(2, 8, start_percent=0.0, end_percent=0.5)  # active for sigma in [0.5, 1]
    late = cond(5, 8, start_percent=0.5, end_percent=1.0, strength=3.0)  # sigma in [0, 0.5]
    both = prepare_conditioning(early + late)
    high = p(x, torch.tensor([0.8]), both)
    torch.testing.assert_close(high, p(x, torch.tensor([0.8]), both[:1]))
    low = p(x, torch.tensor([0.3]), both)
    torch.testing.assert_close(low, p(x, torch.tensor([0.3]), both[1:]))
    at_half = p(x, torch.tensor([0.5]), both)  # both active: strength-weighted mean (1 and 3)
    expect = (p(x, torch.tensor([0.5]), both[:1]) + 3 * p(x, torch.tensor([0.5]), both[1:])) / 4
    torch.testing.assert_close(at_half, expect)


def test_mask_channels_follow_the_8x8_cell_layout():
    h, w = 3, 5
    mask = torch.rand(1, 8 * h, 8 * w, generator=torch.Generator().manual_seed(2))
    out = mask_channels(mask, h, w)
    assert out.shape == (1, 64, h, w)
    for i in range(h):
        for j in range(w):
            for py in range(8):
                for px in range(8):
                    assert out[0, py * 8 + px, i, j] == mask[0, 8 * i + py, 8 * j + px]


def test_fill_and_canny_models_get_processed_concat_channels():
    x = torch.randn(1, 16, 2, 3)
    image = torch.randn(1, 16, 2, 3)
    mask = torch.zeros(1, 1, 16, 24)
    mask[..., :8, :] = 1.0
    fill, forward = predictor(in_channels=384)
    fill(x, torch.tensor([0.5]), prepare_conditioning(cond(concat_latent_image=image, concat_mask=mask)))
    sent = forward.calls[0]["x"]
    assert sent.shape == (1, 96, 2, 3)
    torch.testing.assert_close(sent[:, :16], x)
    torch.testing.assert_close(sent[:, 16:32], process_in(image))
    assert torch.equal(sent[:, 32:, 0], torch.ones(1, 64, 3)) and torch.count_nonzero(sent[:, 32:, 1]) == 0
    canny, forward = predictor(in_channels=128)
    canny(x, torch.tensor([0.5]), prepare_conditioning(cond()))  # no concat image: processed zeros
    torch.testing.assert_close(forward.calls[0]["x"][:, 16:], process_in(torch.zeros_like(x)))
    fill(x, torch.tensor([0.5]), prepare_conditioning(cond(concat_latent_image=image)))  # no mask: all ones
    assert torch.equal(fill.forward.calls[-1]["x"][:, 32:], torch.ones(1, 64, 2, 3))


def test_reference_latents_are_processed_and_passed_with_the_method():
    p, forward = predictor()
    ref = torch.randn(1, 16, 4, 4)
    p(
        torch.randn(1, 16, 2, 2),
        torch.tensor([0.5]),
        prepare_conditioning(cond(reference_latents=[ref], reference_latents_method="index")),
    )
    (sent,) = forward.calls[0]["ref_latents"]
    torch.testing.assert_close(sent, process_in(ref))
    assert forward.calls[0]["ref_method"] == "index"
    torch.testing.assert_close(process_out(process_in(ref)), ref)


# --- sampling nodes on a tiny FLUX transformer, against diffusers' FluxPipeline ------------------

TINY = dict(
    hidden_size=64,
    num_heads=2,
    depth=1,
    depth_single_blocks=2,
    axes_dim=(8, 12, 12),
    context_in_dim=32,
    vec_in_dim=16,
)


def tiny_handle(guidance_embed: bool = True, in_channels: int = 64, seed: int = 0):
    from models.flux.model import Flux
    from models.flux.params import FluxParams
    from models.patches import ModelHandle, ModelOptions

    params = FluxParams(in_channels=in_channels, guidance_embed=guidance_embed, **TINY)
    torch.manual_seed(seed)
    module = Flux(params).eval()
    return ModelHandle(module=module, params=params, options=ModelOptions(compute_dtype=torch.float32))


def sampling_modules():
    from nodes.sampling import custom as sampling_custom
    from nodes.sampling import ksampler as sampling

    return (conditioning, latent, sampling, sampling_custom)


def run_prompt(prompt: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    for key in values:
        prompt[f"given_{key}"] = {"class_type": "Given", "inputs": {"key": key}}
    result = make_executor(values, *sampling_modules()).run_prompt(prompt, prompt_id="t")
    return {k: v["value"][0] for k, v in result.outputs.items()}


def g(key: str) -> list[Any]:
    return [f"given_{key}", 0]


def test_sampler_custom_advanced_matches_diffusers_flux_pipeline():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from models.formats.diffusers_flux import bfl_to_diffusers_transformer

    handle = tiny_handle()
    width, height, steps, seed = 128, 96, 4, 1234
    context = torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(5))
    pooled = torch.randn(1, 16, generator=torch.Generator().manual_seed(6))
    prompt = {
        "ms": {
            "class_type": "ModelSamplingFlux",
            "inputs": {
                "model": g("model"),
                "max_shift": 1.15,
                "base_shift": 0.5,
                "width": width,
                "height": height,
            },
        },
        "guided": {"class_type": "FluxGuidance", "inputs": {"conditioning": g("cond"), "guidance": 4.0}},
        "guider": {
            "class_type": "BasicGuider",
            "inputs": {"model": ["ms", 0], "conditioning": ["guided", 0]},
        },
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sigmas": {
            "class_type": "BasicScheduler",
            "inputs": {"model": ["ms", 0], "scheduler": "simple", "steps": steps, "denoise": 1.0},
        },
        "empty": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": width, "height": height, "batch_size": 1},
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
        "out": {"class_type": "Capture", "inputs": {"value": ["sample", 0]}},
        "den": {"class_type": "Capture", "inputs": {"value": ["sample", 1]}},
    }
    out = run_prompt(prompt, {"model": handle, "cond": [[context, {"pooled_output": pooled}]]})
    ours = out["out"]["samples"]
    assert ours.shape == (1, 16, height // 8, width // 8)

    p = handle.params
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=p.depth,
        num_single_layers=p.depth_single_blocks,
        attention_head_dim=p.head_dim,
        num_attention_heads=p.num_heads,
        joint_attention_dim=p.context_in_dim,
        pooled_projection_dim=p.vec_in_dim,
        guidance_embeds=True,
        axes_dims_rope=p.axes_dim,
    )
    transformer.load_state_dict(bfl_to_diffusers_transformer(handle.module.state_dict()))
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        base_shift=0.5,
        max_shift=1.15,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=None,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
    )
    noise = torch.randn(1, 16, height // 8, width // 8, generator=torch.Generator().manual_seed(seed))
    packed = (
        noise.reshape(1, 16, height // 16, 2, width // 16, 2).permute(0, 2, 4, 1, 3, 5).reshape(1, -1, 64)
    )
    theirs = pipe(
        prompt_embeds=context,
        pooled_prompt_embeds=pooled,
        height=height,
        width=width,
        num_inference_steps=steps,
        guidance_scale=4.0,
        latents=packed,
        output_type="latent",
    ).images
    theirs = theirs.reshape(1, height // 16, width // 16, 16, 2, 2).permute(0, 3, 1, 4, 2, 5)
    theirs = theirs.reshape(1, 16, height // 8, width // 8)
    torch.testing.assert_close(process_in(ours), theirs, atol=2e-5, rtol=1e-4)
    # the denoised output is the last step's x0 estimate; for euler ending at sigma 0 that is the result
    torch.testing.assert_close(out["den"]["samples"], ours, atol=1e-5, rtol=1e-5)


# --- VAE nodes on a tiny autoencoder, against diffusers' AutoencoderKL --------------------------


@pytest.fixture(scope="module")
def tiny_vae():
    """Our tiny AutoEncoder in a VaeHandle and the same weights in a diffusers AutoencoderKL."""
    from diffusers import AutoencoderKL

    from models.flux.autoencoder import AutoEncoder, AutoEncoderParams
    from models.formats.diffusers_vae import bfl_to_diffusers_vae
    from models.patches import VaeHandle

    params = AutoEncoderParams(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1)
    torch.manual_seed(3)
    ae = AutoEncoder(params).eval()
    ref = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    ).eval()
    ref.load_state_dict(bfl_to_diffusers_vae(ae.state_dict()))
    return VaeHandle(module=ae, params=params), ref


def test_vae_encode_decode_follow_comfyui_latent_convention(tiny_vae):
    vae, ref = tiny_vae
    image = torch.rand(2, 36, 44, 3, generator=torch.Generator().manual_seed(4))
    (encoded,) = run_node("VAEEncode", {}, {"pixels": image, "vae": vae})
    cropped = image[:, 2:34, 2:42]  # center crop to multiples of 8
    with torch.no_grad():
        mean = ref.encode(cropped.movedim(-1, 1) * 2 - 1).latent_dist.mean
        pixels = ((ref.decode(mean).sample + 1) / 2).clamp(0, 1).movedim(1, -1)
    # LATENT holds the un-scaled mean, like ComfyUI
    torch.testing.assert_close(encoded["samples"], mean, atol=2e-5, rtol=1e-4)
    (decoded,) = run_node("VAEDecode", {}, {"samples": {"samples": mean}, "vae": vae})
    assert decoded.shape == (2, 32, 40, 3)
    torch.testing.assert_close(decoded, pixels, atol=2e-5, rtol=1e-4)
    # one tile covering everything is the plain path; several tiles keep shapes and stay close
    (tiled,) = run_node(
        "VAEEncodeTiled",
        {"tile_size": 64, "overlap": 0, "temporal_size": 64, "temporal_overlap": 8},
        {"pixels": cropped, "vae": vae},
    )
    torch.testing.assert_close(tiled["samples"], encoded["samples"], atol=1e-6, rtol=1e-6)
    big = torch.rand(1, 16, 10, 10, generator=torch.Generator().manual_seed(8))
    (plain,) = run_node("VAEDecode", {}, {"samples": {"samples": big}, "vae": vae})
    (tiles,) = run_node(
        "VAEDecodeTiled",
        {"tile_size": 64, "overlap": 16, "temporal_size": 64, "temporal_overlap": 8},
        {"samples": {"samples": big}, "vae": vae},
    )
    assert tiles.shape == plain.shape == (1, 80, 80, 3) and torch.isfinite(tiles).all()


def test_instruct_pix2pix_and_inpaint_conditioning(tiny_vae):
    vae, ref = tiny_vae
    image = torch.rand(1, 32, 40, 3, generator=torch.Generator().manual_seed(9))
    mask = torch.zeros(1, 32, 40)
    mask[:, 8:20, 16:32] = 1.0
    positive, negative = cond(guidance=30.0), cond(3)

    def ref_mean(pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return ref.encode(pixels.movedim(-1, 1) * 2 - 1).latent_dist.mean

    pos, neg, lat = run_node(
        "InstructPixToPixConditioning",
        {},
        {"positive": positive, "negative": negative, "vae": vae, "pixels": image},
        outputs=3,
    )
    for out in (pos, neg):
        torch.testing.assert_close(out[0][1]["concat_latent_image"], ref_mean(image), atol=2e-5, rtol=1e-4)
    assert pos[0][1]["guidance"] == 30.0 and "concat_latent_image" not in positive[0][1]
    assert torch.count_nonzero(lat["samples"]) == 0 and lat["samples"].shape == (1, 16, 4, 5)

    pos, neg, lat = run_node(
        "InpaintModelConditioning",
        {"noise_mask": True},
        {"positive": positive, "negative": negative, "vae": vae, "pixels": image, "mask": mask},
        outputs=3,
    )
    greyed = image.clone()
    greyed[:, 8:20, 16:32] = 0.5  # the area to paint is mid-grey for the Fill model
    torch.testing.assert_close(pos[0][1]["concat_latent_image"], ref_mean(greyed), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(neg[0][1]["concat_mask"], mask[:, None])
    torch.testing.assert_close(lat["samples"], ref_mean(image), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(lat["noise_mask"], mask[:, None])
    (_, _, plain) = run_node(
        "InpaintModelConditioning",
        {"noise_mask": False},
        {"positive": positive, "negative": negative, "vae": vae, "pixels": image, "mask": mask},
        outputs=3,
    )
    assert "noise_mask" not in plain


# --- text encoding nodes on tiny CLIP/T5, against the transformers models called directly --------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from models.patches import ClipHandle
    from models.text.clip import CLIP_TINY, build_clip
    from models.text.encode import TextEncoders
    from models.text.t5 import T5_TINY, build_t5
    from models.text.tiny_tokenizers import write_tiny_tokenizers
    from models.text.tokenizers import load_flux_tokenizers

    models_dir = tmp_path_factory.mktemp("tokenizers")
    write_tiny_tokenizers(models_dir)
    clip_tok, t5_tok = load_flux_tokenizers(models_dir)
    torch.manual_seed(4)
    encoders = TextEncoders(
        clip=build_clip(CLIP_TINY), t5=build_t5(T5_TINY), clip_tokenizer=clip_tok, t5_tokenizer=t5_tok
    )
    return ClipHandle(encoders=encoders, t5_max_length=512)


def _reference_encode(clip, clip_text: str, t5_text: str) -> tuple[torch.Tensor, torch.Tensor]:
    enc = clip.encoders
    with torch.no_grad():
        pooled = enc.clip(input_ids=torch.tensor([enc.clip_tokenizer(clip_text)["input_ids"]])).pooler_output
        ids = enc.t5_tokenizer(t5_text)["input_ids"]  # ends with EOS; ComfyUI pads with 0 to 256
        context = enc.t5(input_ids=torch.tensor([ids + [0] * (256 - len(ids))])).last_hidden_state
    return context, pooled


def test_clip_text_encode_nodes(tiny_clip):
    (plain,) = run_node("CLIPTextEncode", {"text": "a fox in the snow"}, {"clip": tiny_clip})
    context, pooled = _reference_encode(tiny_clip, "a fox in the snow", "a fox in the snow")
    torch.testing.assert_close(plain[0][0], context, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain[0][1]["pooled_output"], pooled, atol=1e-5, rtol=1e-5)
    assert set(plain[0][1]) == {"pooled_output"}
    (flux,) = run_node(
        "CLIPTextEncodeFlux",
        {"clip_l": "a red house", "t5xxl": "a house by the lake", "guidance": 2.0},
        {"clip": tiny_clip},
    )
    context, pooled = _reference_encode(tiny_clip, "a red house", "a house by the lake")
    torch.testing.assert_close(flux[0][0], context, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flux[0][1]["pooled_output"], pooled, atol=1e-5, rtol=1e-5)
    assert flux[0][1]["guidance"] == 2.0 and flux[0][0].shape == (1, 256, 64)


def test_cfg_pairs_run_as_one_batch_with_the_same_result():
    from models.flux.apply import flux_forward_latent

    handle = tiny_handle(in_channels=384, seed=2)  # Fill: per-half concat channels too
    calls = []

    def counting(*args, **kw):
        calls.append(args[1].shape[0])
        return flux_forward_latent(*args, **kw)

    p = FluxPredictor(
        handle.module,
        handle.params,
        percent_to_sigma=lambda q: 1.0 - q,
        device=torch.device("cpu"),
        forward=counting,
    )
    image, mask = torch.randn(1, 16, 4, 4), torch.rand(1, 1, 32, 32)
    pos = prepare_conditioning(
        [
            [
                torch.randn(1, 5, 32),
                {
                    "pooled_output": torch.randn(1, 16),
                    "guidance": 3.0,
                    "concat_latent_image": image,
                    "concat_mask": mask,
                },
            ]
        ]
    )
    neg = prepare_conditioning(
        [[torch.randn(1, 5, 32), {"pooled_output": torch.zeros(1, 16), "guidance": 1.0}]]
    )
    both = batch_conds(pos, neg)
    assert isinstance(both, BatchedConds)
    x, sigma = torch.randn(2, 16, 4, 4), torch.tensor([0.7, 0.7])
    batched = p(torch.cat([x, x]), torch.cat([sigma, sigma]), both)
    separate = torch.cat([p(x, sigma, pos), p(x, sigma, neg)])
    torch.testing.assert_close(batched, separate, atol=1e-5, rtol=1e-5)
    assert calls == [4, 2, 2]
    # entries that cannot share a batch run separately
    longer = prepare_conditioning([[torch.randn(1, 7, 32), {"pooled_output": torch.zeros(1, 16)}]])
    assert batch_conds(pos, longer) is None
    assert batch_conds(pos + neg, neg) is None
    unguided = prepare_conditioning(
        [[torch.randn(1, 5, 32), {"pooled_output": torch.zeros(1, 16), "guidance": None}]]
    )
    assert batch_conds(pos, unguided) is None
