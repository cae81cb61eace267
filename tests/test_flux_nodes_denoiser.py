"""The FLUX denoiser bridge and sampling through it: FluxPredictor on a fake transformer forward
(x0 from velocity, guidance, timestep ranges, concat and reference channels), SamplerCustomAdvanced
on a tiny transformer against diffusers' FluxPipeline, and CFG pairs batched into one forward.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from models.flux.denoiser import (
    BatchedConds,
    FluxPredictor,
    batch_conds,
    mask_channels,
    prepare_conditioning,
    process_in,
    process_out,
)
from tests.flux_node_helpers import cond, g, run_prompt, tiny_handle

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
