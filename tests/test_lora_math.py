"""Patch math against float64 formulas written out here (flux-formats reference §7.1, 7.5, 7.6)."""

from __future__ import annotations

import pytest
import torch

from models.lora.math import PatchShapeError, patched_weight, weight_delta
from models.patches import WeightPatch

TOL = dict(rtol=1e-5, atol=1e-5)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


def d64(t: torch.Tensor) -> torch.Tensor:
    return t.double()


def test_lora_scaling_strength_and_alpha():
    w, up, down = rand(12, 8, seed=1), rand(12, 3, seed=2), rand(3, 8, seed=3)
    p = WeightPatch("x.weight", "lora", (up, down), strength=0.7, alpha=2.0)
    ref = d64(w) + 0.7 * (2.0 / 3) * d64(up) @ d64(down)
    torch.testing.assert_close(patched_weight(w, [p]).double(), ref, **TOL)
    no_alpha = WeightPatch("x.weight", "lora", (up, down))
    torch.testing.assert_close(patched_weight(w, [no_alpha]).double(), d64(w) + d64(up) @ d64(down), **TOL)


def test_order_offsets_base_strength_and_bf16_input():
    w = rand(9, 4, seed=4).to(torch.bfloat16)
    d = rand(3, 4, seed=5)
    v = rand(9, 4, seed=6)
    patches = [
        WeightPatch("k", "diff", (d,), strength=0.5, offset=(0, 3, 3)),
        WeightPatch("k", "diff", (v,), strength=0.25, base_strength=0.75),
    ]
    ref = d64(w.float())
    ref[3:6] += 0.5 * d64(d)
    ref = ref * 0.75 + 0.25 * d64(v)
    out = patched_weight(w, patches)
    assert out.dtype == torch.float32 and w.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, **TOL)


def test_set_and_inner_patches():
    w, v, d = rand(5, 5, seed=7), rand(5, 5, seed=8), rand(5, 5, seed=9)
    full = WeightPatch("k", "set", (v,))
    assert torch.equal(patched_weight(w, [full]), v)
    half = WeightPatch("k", "set", (v,), strength=0.5)
    torch.testing.assert_close(patched_weight(w, [half]), (w + v) / 2, **TOL)
    # a merge of a model that carries its own patch: the inner patch applies to v first
    merged = WeightPatch(
        "k", "diff", (v,), strength=0.4, base_strength=0.6, inner=(WeightPatch("k", "diff", (d,)),)
    )
    torch.testing.assert_close(
        patched_weight(w, [merged]).double(), 0.6 * d64(w) + 0.4 * (d64(v) + d64(d)), **TOL
    )


def test_strength_zero_is_bit_exact_and_base_untouched():
    w = rand(6, 6, seed=10)
    before = w.clone()
    kinds = [
        WeightPatch("k", "lora", (rand(6, 2), rand(2, 6)), strength=0.0, alpha=4.0),
        WeightPatch("k", "diff", (rand(6, 6),), strength=0.0),
        WeightPatch("k", "set", (rand(6, 6),), strength=0.0),
        WeightPatch(
            "k",
            "lora",
            (rand(6, 2), rand(2, 6), rand(6, 1).abs()),
            strength=0.0,
            slots=("up", "down", "dora_scale"),
        ),
    ]
    assert torch.equal(patched_weight(w, kinds), w)
    assert torch.equal(w, before)


def test_dora_both_axes():
    w, up, down = rand(8, 5, seed=11), rand(8, 2, seed=12), rand(2, 5, seed=13)
    for magnitude in (rand(8, 1, seed=14).abs() + 0.5, rand(1, 5, seed=15).abs() + 0.5):
        for s in (1.0, 0.3):
            p = WeightPatch(
                "k", "lora", (up, down, magnitude), slots=("up", "down", "dora_scale"), alpha=1.0, strength=s
            )
            merged = d64(w) + 0.5 * d64(up) @ d64(down)
            axis = 1 if magnitude.shape[0] == 8 else 0
            normalised = merged * d64(magnitude) / merged.norm(dim=axis, keepdim=True)
            ref = d64(w) + s * (normalised - d64(w))
            torch.testing.assert_close(patched_weight(w, [p]).double(), ref, **TOL)


def test_locon_mid_on_a_conv_kernel():
    w = rand(6, 4, 3, 3, seed=16)
    up, down, mid = rand(6, 2, 1, 1, seed=17), rand(2, 4, 1, 1, seed=18), rand(2, 2, 3, 3, seed=19)
    p = WeightPatch("k", "lora", (up, down, mid), slots=("up", "down", "mid"), alpha=1.0)
    # delta[o, i, k, l] = sum_{a, b} up[o, a] * mid[b, a, k, l] * down[b, i]
    ref_delta = torch.einsum("oa,bakl,bi->oikl", d64(up[:, :, 0, 0]), d64(mid), d64(down[:, :, 0, 0]))
    torch.testing.assert_close(patched_weight(w, [p]).double(), d64(w) + 0.5 * ref_delta, **TOL)


def test_loha():
    w = rand(8, 6, seed=20)
    w1a, w1b, w2a, w2b = rand(8, 2, seed=21), rand(2, 6, seed=22), rand(8, 2, seed=23), rand(2, 6, seed=24)
    p = WeightPatch("k", "loha", (w1a, w1b, w2a, w2b), alpha=1.0, strength=0.8)
    ref = d64(w) + 0.8 * 0.5 * (d64(w1a) @ d64(w1b)) * (d64(w2a) @ d64(w2b))
    torch.testing.assert_close(patched_weight(w, [p]).double(), ref, **TOL)


def test_lokr_full_and_decomposed_factors():
    w = rand(8, 12, seed=25)
    w1, w2a, w2b = rand(2, 3, seed=26), rand(4, 2, seed=27), rand(2, 4, seed=28)
    p = WeightPatch("k", "lokr", (w1, w2a, w2b), slots=("w1", "w2a", "w2b"), alpha=3.0)
    ref = d64(w) + 1.5 * torch.kron(d64(w1), d64(w2a) @ d64(w2b))
    torch.testing.assert_close(patched_weight(w, [p]).double(), ref, **TOL)
    w2 = rand(4, 4, seed=29)
    full = WeightPatch(
        "k", "lokr", (w1, w2), slots=("w1", "w2"), alpha=3.0
    )  # alpha ignored: nothing decomposed
    torch.testing.assert_close(
        patched_weight(w, [full]).double(), d64(w) + torch.kron(d64(w1), d64(w2)), **TOL
    )


def test_reshape_pads_then_applies_and_weight_delta():
    w = rand(4, 2, seed=30)
    up, down = rand(4, 2, seed=31), rand(2, 3, seed=32)
    p = WeightPatch("img_in.weight", "lora", (up, down), reshape=(4, 3))
    out = patched_weight(w, [p])
    ref = torch.zeros(4, 3, dtype=torch.float64)
    ref[:, :2] = d64(w)
    ref += d64(up) @ d64(down)
    torch.testing.assert_close(out.double(), ref, **TOL)
    torch.testing.assert_close(
        weight_delta(p, w).double(), ref - torch.nn.functional.pad(d64(w), (0, 1)), **TOL
    )


def test_weight_delta_matches_patched_minus_base():
    w = rand(9, 4, seed=33)
    p = WeightPatch("k", "lora", (rand(3, 2), rand(2, 4)), offset=(0, 6, 3), alpha=1.0, strength=2.0)
    delta = weight_delta(p, w)
    assert torch.equal(delta[:6], torch.zeros(6, 4))
    torch.testing.assert_close(w + delta, patched_weight(w, [p]))


def test_errors_are_typed():
    with pytest.raises(PatchShapeError, match="x.weight"):
        patched_weight(rand(4, 4), [WeightPatch("x.weight", "diff", (rand(3, 4),))])
    with pytest.raises(ValueError, match="kind"):
        WeightPatch("k", "bogus", (rand(1),))
    with pytest.raises(ValueError, match="w2"):
        WeightPatch("k", "lokr", (rand(2, 2),), slots=("w1",))


def test_lora_factors_give_the_delta_at_low_rank():
    from models.lora.math import lora_factors

    w = rand(9, 4, seed=34)
    p = WeightPatch(
        "k", "lora", (rand(3, 2, seed=35), rand(2, 4, seed=36)), offset=(0, 3, 3), alpha=4.0, strength=0.5
    )
    b, a = lora_factors(p)
    torch.testing.assert_close(b @ a, weight_delta(p, w)[3:6])
    dora = WeightPatch("k", "lora", (rand(3, 2), rand(2, 4), rand(3, 1)), slots=("up", "down", "dora_scale"))
    assert lora_factors(dora) is None and lora_factors(WeightPatch("k", "diff", (w,))) is None
