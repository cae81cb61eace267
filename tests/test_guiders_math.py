"""Guiders beyond CFG on a toy conditional model: DualCFG, adaptive guidance (V1/V2), CFG-Zero*.

References are the formulas of ComfyUI's nodes / the packs (flux-formats §10), written out here in float64.
"""

from __future__ import annotations

import torch

from models.sampling import (
    AdaptiveState,
    FlowModelSampling,
    PostCfgArgs,
    adaptive_denoiser,
    cfg_denoiser,
    cfg_zero_star,
    dual_cfg_denoiser,
    sample,
)


def toy_model(calls: list[int]):
    """x0 = x * (1 - sigma) + cond * sigma (cond a tensor); records the batch size of every call."""

    def model_fn(x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        s = sigma.reshape(-1, 1, 1, 1).to(x)
        return x * (1 - s) + cond.to(x) * s

    return model_fn


def _conds(seed: int = 0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 4, 3, 3, generator=gen, dtype=dtype) for _ in range(3)]


def test_dual_cfg_regular_and_nested_match_formulas():
    c1, c2, n = _conds()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    sigma = torch.tensor([0.6, 0.6], dtype=torch.float64)
    calls: list[int] = []
    model = toy_model(calls)
    p1, p2, pn = (model(x, sigma, c) for c in (c1, c2, n))
    regular = dual_cfg_denoiser(model, c1, c2, n, 3.0, 2.0)(x, sigma)
    torch.testing.assert_close(regular, pn + (p2 - pn) * 2.0 + (p1 - p2) * 3.0, rtol=0, atol=1e-12)
    nested = dual_cfg_denoiser(model, c1, c2, n, 3.0, 2.0, nested=True)(x, sigma)
    text = p2 + (p1 - p2) * 3.0
    torch.testing.assert_close(nested, pn + 2.0 * (text - pn), rtol=0, atol=1e-12)
    calls.clear()
    one = dual_cfg_denoiser(model, c1, c2, n, 3.0, 1.0)(x, sigma)  # cfg2 1: the negative is skipped
    assert len(calls) == 2
    torch.testing.assert_close(one, p2 + (p1 - p2) * 3.0, rtol=0, atol=1e-12)
    calls.clear()
    torch.testing.assert_close(
        dual_cfg_denoiser(model, c1, c2, n, 1.0, 1.0)(x, sigma), p1, rtol=0, atol=1e-12
    )
    assert len(calls) == 1


def test_cfg_zero_star_matches_formula():
    gen = torch.Generator().manual_seed(1)
    x, cond, uncond = (torch.randn(2, 4, 3, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    cfg = 4.0
    denoised = uncond + (cond - uncond) * cfg
    out = cfg_zero_star(PostCfgArgs(denoised, cond, uncond, x, torch.tensor([0.5, 0.5]), cfg))
    for b in range(2):
        v_c, v_u = (x[b] - cond[b]).flatten(), (x[b] - uncond[b]).flatten()
        alpha = float(v_c @ v_u) / (float(v_u @ v_u) + 1e-8)
        expect = denoised[b] + uncond[b] * (alpha - 1) + cfg * uncond[b] * (1 - alpha)
        torch.testing.assert_close(out[b], expect, rtol=0, atol=1e-12)


def _run(denoiser, steps: int = 8) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(1, 4, 3, 3, generator=gen)
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    return sample(
        denoiser,
        noise=noise,
        latent_image=torch.zeros_like(noise),
        sigmas=sigmas,
        sampler="euler",
        model_sampling=FlowModelSampling.flux_default(),
        noise_seed=0,
    )


def test_adaptive_threshold_one_is_exactly_cfg():
    pos, neg, _ = _conds(dtype=torch.float32)
    calls: list[int] = []
    plain = _run(cfg_denoiser(toy_model(calls), pos, neg, 3.5))
    state = AdaptiveState()
    adaptive = _run(adaptive_denoiser(toy_model(calls), pos, neg, 3.5, threshold=1.0, state=state))
    assert torch.equal(plain, adaptive)
    assert state.guided == 8 and state.cond_only == 0


def test_adaptive_low_threshold_skips_uncond_after_convergence():
    pos, neg, _ = _conds(dtype=torch.float32)
    neg = pos + 0.05 * neg  # nearly aligned predictions: converges at once
    cfg_calls: list[int] = []
    _run(cfg_denoiser(toy_model(cfg_calls), pos, neg, 3.5))
    calls: list[int] = []
    state = AdaptiveState()
    _run(adaptive_denoiser(toy_model(calls), pos, neg, 3.5, threshold=0.9, cfg_start_sigma=1.0, state=state))
    assert state.converged and state.guided == 2  # sigma 1 runs plain CFG (cfg start), the next converges
    assert len(calls) == 2 * 2 + 6 < len(cfg_calls) == 16
    assert state.threshold_sigma < 1.0


def test_adaptive_v2_initial_disabled_calls_are_cond_only():
    pos, neg, _ = _conds(dtype=torch.float32)
    calls: list[int] = []
    state = AdaptiveState()
    out = _run(
        adaptive_denoiser(
            toy_model(calls), pos, neg, 3.5, threshold=1.0, initial_disabled_calls=3, state=state
        )
    )
    assert state.cond_only == 3 and state.guided == 5
    assert len(calls) == 3 + 2 * 5
    assert torch.isfinite(out).all()
