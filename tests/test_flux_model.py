"""FLUX.1 transformer: parity with diffusers' FluxTransformer2DModel, detection, packing, apply, extensions."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

from models.flux.apply import flux_forward_latent, reference_offsets
from models.flux.extensions import FluxExtensions, TokenState
from models.flux.layers import timestep_embedding
from models.flux.math import rope
from models.flux.model import Flux
from models.flux.packing import make_image_ids, make_text_ids, pack_latents, unpack_latents
from models.flux.params import (
    FLUX_CANNY_DEPTH,
    FLUX_DEV,
    FLUX_FILL,
    FLUX_SCHNELL,
    FluxParams,
    FluxParamsError,
    detect_flux_params,
    flux_variant_name,
)
from models.formats.diffusers_flux import diffusers_to_bfl_transformer

from .test_diffusers_convert import TINY, tiny_diffusers_transformer

B, H_TOK, W_TOK, T = 2, 3, 4, 5


def _pair(p: FluxParams = TINY, seed: int = 0):
    """(diffusers model, our model) with identical random weights."""
    theirs = tiny_diffusers_transformer(p, seed)
    ours = Flux(p).eval()
    ours.load_state_dict(diffusers_to_bfl_transformer(theirs.state_dict()), strict=True)
    return theirs, ours


def _inputs(p: FluxParams = TINY, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    # target grid plus a Kontext-style block (index 1, offset rows) so all three RoPE axes vary
    ids = torch.cat(
        (make_image_ids(B, H_TOK, W_TOK), make_image_ids(B, 2, 2, index=1, h_offset=H_TOK)), dim=1
    )
    return {
        "img": torch.randn(B, ids.shape[1], p.in_channels, generator=g, dtype=dtype),
        "img_ids": ids.to(dtype),
        "txt": torch.randn(B, T, p.context_in_dim, generator=g, dtype=dtype),
        "txt_ids": make_text_ids(B, T).to(dtype),
        "timesteps": torch.tensor([0.3, 0.9], dtype=dtype),
        "y": torch.randn(B, p.vec_in_dim, generator=g, dtype=dtype),
        "guidance": torch.tensor([3.5, 1.0], dtype=dtype),
    }


def _diffusers_forward(model, x, **extra):
    # diffusers takes flow time in 0..1 and multiplies timestep and guidance by 1000 itself
    return model(
        hidden_states=x["img"],
        encoder_hidden_states=x["txt"],
        pooled_projections=x["y"],
        timestep=x["timesteps"],
        img_ids=x["img_ids"][0],
        txt_ids=x["txt_ids"][0],
        guidance=x.get("guidance"),
        return_dict=False,
        **extra,
    )[0]


def _ours(model, x, extensions=None):
    return model(
        x["img"], x["img_ids"], x["txt"], x["txt_ids"], x["timesteps"], x["y"], x.get("guidance"), extensions
    )


@torch.no_grad()
def test_matches_diffusers_fp32():
    theirs, ours = _pair()
    x = _inputs()
    ref, out = _diffusers_forward(theirs, x), _ours(ours, x)
    err = (out - ref).abs().max().item()
    # measured 9.5e-7 (outputs ~2.5 in magnitude)
    assert err <= 1e-5, f"max |ours - diffusers| = {err:.2e}"
    assert ref.abs().max() > 0.5


@torch.no_grad()
def test_matches_diffusers_float64():
    """Exactness check beyond fp32 noise: both in float64 (timestep embeddings stay fp32 in both)."""
    theirs, ours = _pair()
    x = _inputs(dtype=torch.float64)
    err = (_ours(ours.double(), x) - _diffusers_forward(theirs.double(), x)).abs().max().item()
    assert err <= 1e-8, f"max |ours - diffusers| in float64 = {err:.2e}"  # measured 5e-10


@torch.no_grad()
def test_schnell_matches_diffusers_and_ignores_guidance():
    p = dataclasses.replace(TINY, guidance_embed=False)
    theirs, ours = _pair(p, seed=3)
    x = _inputs(p)
    ref = _diffusers_forward(theirs, {**x, "guidance": None})
    assert (_ours(ours, x) - ref).abs().max() <= 1e-5
    assert torch.equal(_ours(ours, x), _ours(ours, {**x, "guidance": None}))


@torch.no_grad()
def test_guidance_none_skips_the_guidance_term():
    _, ours = _pair()
    x = _inputs()
    with_g, without = _ours(ours, x), _ours(ours, {**x, "guidance": None})
    assert not torch.allclose(with_g, without)
    ours.guidance_in.out_layer.bias.zero_()
    ours.guidance_in.out_layer.weight.zero_()
    assert torch.allclose(_ours(ours, x), _ours(ours, {**x, "guidance": None}), atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("cyclic", [False, True])
def test_control_residuals_match_diffusers_controlnet_inputs(cyclic):
    theirs, ours = _pair()
    x = _inputs()
    g = torch.Generator().manual_seed(5)
    n_img, hidden = x["img"].shape[1], TINY.hidden_size
    double = [torch.randn(B, n_img, hidden, generator=g)]  # 1 residual for 2 blocks: both get it
    single = [torch.randn(B, n_img, hidden, generator=g) for _ in range(2)]  # 3 blocks: interval 2
    ref = _diffusers_forward(
        theirs,
        x,
        controlnet_block_samples=double,
        controlnet_single_block_samples=single,
        controlnet_blocks_repeat=cyclic,
    )
    ext = FluxExtensions(
        double_residuals=tuple(double), single_residuals=tuple(single), cyclic_double_residuals=cyclic
    )
    out = _ours(ours, x, ext)
    assert (out - ref).abs().max() <= 1e-5
    assert not torch.allclose(out, _ours(ours, x), atol=1e-3)


@torch.no_grad()
def test_short_control_residual_touches_only_leading_image_tokens():
    _, ours = _pair()
    x = _inputs()
    n_target = H_TOK * W_TOK  # residuals computed without the reference tokens
    residual = torch.randn(B, n_target, TINY.hidden_size)
    ext = FluxExtensions(double_residuals=(residual, None))
    # adding the residual padded with zeros over the reference tokens is the same thing
    padded = torch.cat((residual, torch.zeros(B, x["img"].shape[1] - n_target, TINY.hidden_size)), dim=1)
    expected = _ours(ours, x, FluxExtensions(double_residuals=(padded, None)))
    assert torch.allclose(_ours(ours, x, ext), expected, atol=1e-6)


@torch.no_grad()
def test_extra_attention_hook_gets_normed_queries_and_adds_its_delta():
    _, ours = _pair()
    x = _inputs()
    seen = []

    def hook(index, img_q, img):
        seen.append((index, img_q.clone(), img.shape))
        # not a constant: a per-token constant vanishes in the next LayerNorm
        return 0.1 * (index + 1) * torch.sin(torch.arange(img.numel()).reshape(img.shape).float())

    out = _ours(ours, x, FluxExtensions(double_attention=(hook,)))
    assert [s[0] for s in seen] == [0, 1]
    # block 0's image queries, computed independently from its weights
    blk = ours.double_blocks[0]
    shift, scale = blk.img_mod.lin(torch.nn.functional.silu(_vec(ours, x))).chunk(6, dim=-1)[:2]
    u = torch.nn.functional.layer_norm(ours.img_in(x["img"]), (TINY.hidden_size,), eps=1e-6)
    u = u * (1 + scale[:, None]) + shift[:, None]
    q = blk.img_attn.qkv(u)[..., : TINY.hidden_size].reshape(B, -1, TINY.num_heads, TINY.head_dim)
    q = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + 1e-6) * blk.img_attn.norm.query_norm.scale
    assert torch.allclose(seen[0][1], q.transpose(1, 2), atol=1e-5)
    assert not torch.allclose(out, _ours(ours, x), atol=1e-4)


def _vec(model: Flux, x) -> torch.Tensor:
    vec = model.time_in(timestep_embedding(x["timesteps"]))
    vec = vec + model.guidance_in(timestep_embedding(x["guidance"]))
    return vec + model.vector_in(x["y"])


@torch.no_grad()
def test_token_hook_and_mask():
    _, ours = _pair()
    x = _inputs()
    plain = _ours(ours, x)

    def identity(state: TokenState) -> TokenState:
        return state

    def extra_token(state: TokenState) -> TokenState:
        return dataclasses.replace(
            state,
            img=torch.cat((state.img, state.img[:, :1]), dim=1),
            img_ids=torch.cat((state.img_ids, state.img_ids[:, :1] + 9), dim=1),
        )

    assert torch.equal(_ours(ours, x, FluxExtensions(token_hook=identity)), plain)
    extended = _ours(ours, x, FluxExtensions(token_hook=extra_token))
    assert extended.shape == plain.shape and not torch.allclose(extended, plain)
    n = T + x["img"].shape[1]
    everything = FluxExtensions(attention_mask=torch.ones(n, n, dtype=torch.bool))
    assert torch.allclose(_ours(ours, x, everything), plain, atol=1e-6)


def test_backward_reaches_every_parameter():
    _, ours = _pair()
    x = _inputs()
    _ours(ours.train(), x).square().mean().backward()
    missing = [n for n, p in ours.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@torch.no_grad()
def test_meta_construction_and_assign_loading():
    _, ours = _pair()
    x = _inputs()
    with torch.device("meta"):
        lazy = Flux(TINY)
    assert all(p.is_meta for p in lazy.parameters())
    lazy.load_state_dict(ours.state_dict(), assign=True)
    assert not any(t.is_meta for t in (*lazy.parameters(), *lazy.buffers()))
    assert torch.equal(_ours(lazy.eval(), x), _ours(ours, x))


@pytest.mark.parametrize(
    ("params", "name"),
    [(FLUX_DEV, "dev"), (FLUX_SCHNELL, "schnell"), (FLUX_FILL, "fill"), (FLUX_CANNY_DEPTH, "canny/depth")],
)
@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_detects_real_variants_from_shapes(params, name, prefix):
    with torch.device("meta"):
        sd = Flux(params).state_dict()
    shapes = {prefix + k: tuple(v.shape) for k, v in sd.items()}
    found = detect_flux_params(shapes)
    assert found == params
    # parameter counts computed from the released shapes (flux-formats.md 1.1)
    expected = {"dev": 11_901_408_320, "schnell": 11_891_178_560}.get(name)
    if expected is not None:
        assert sum(v.numel() for v in sd.values()) == expected
    assert flux_variant_name(found) == name
    assert detect_flux_params({prefix + k: v for k, v in sd.items()}, prefix=prefix) == params  # meta tensors


def test_detects_tiny_configs_and_rejects_other_files():
    sd = Flux(TINY).state_dict()
    assert detect_flux_params(sd) == TINY  # axes (4, 6, 6) is the default split of head dim 16
    assert detect_flux_params(sd, axes_dim=(2, 8, 6)).axes_dim == (2, 8, 6)
    with pytest.raises(FluxParamsError, match="FLUX.2"):
        detect_flux_params({**sd, "double_stream_modulation_img.lin.weight": (6, 3)})
    with pytest.raises(FluxParamsError, match="img_in.weight is missing"):
        detect_flux_params({k: v for k, v in sd.items() if k != "img_in.weight"})
    with pytest.raises(FluxParamsError, match="not contiguous"):
        detect_flux_params({**sd, "double_blocks.5.img_mod.lin.weight": (1, 1)})


def test_params_invariants_give_the_numbers():
    with pytest.raises(ValueError, match="100 is not divisible by num_heads 3"):
        FluxParams(hidden_size=100, num_heads=3)
    with pytest.raises(ValueError, match=r"sum\(axes_dim\).*= 120.*128"):
        FluxParams(axes_dim=(16, 48, 56))
    assert hash(FLUX_DEV) == hash(FluxParams())


def test_packing_and_ids_match_diffusers_pipeline_helpers():
    z = torch.randn(2, 16, 6, 8)
    tokens = pack_latents(z)
    assert torch.equal(tokens, FluxPipeline._pack_latents(z, 2, 16, 6, 8))
    assert torch.equal(unpack_latents(tokens, 6, 8), FluxPipeline._unpack_latents(tokens, 48, 64, 8))
    assert torch.equal(
        make_image_ids(2, 3, 4)[1], FluxPipeline._prepare_latent_image_ids(2, 3, 4, "cpu", torch.float32)
    )
    shifted = make_image_ids(1, 2, 2, index=1, h_offset=3, w_offset=5)[0]
    assert shifted.tolist() == [[1, 3, 5], [1, 3, 6], [1, 4, 5], [1, 4, 6]]
    with pytest.raises(ValueError, match="even"):
        pack_latents(torch.zeros(1, 16, 5, 4))


def test_timestep_embedding_and_text_rope_are_the_reference_ones():
    t = torch.tensor([0.0, 0.25, 1.0])
    ref = get_timestep_embedding(t * 1000, 256, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert torch.allclose(timestep_embedding(t), ref, atol=1e-6)
    assert torch.equal(rope(torch.zeros(1, 4), 8, 10_000), torch.ones(1, 4, 4, dtype=torch.complex64))


def test_reference_offsets_follow_the_three_methods():
    refs = [(4, 6), (4, 6), (10, 2)]
    assert reference_offsets((8, 10), refs, "index") == [(1, 0, 0), (2, 0, 0), (3, 0, 0)]
    assert reference_offsets((8, 10), refs, "uxo") == [(0, 8, 10), (0, 12, 16), (0, 16, 22)]
    # offset: stack below while the pile is wider than tall, else to the right
    assert reference_offsets((8, 10), refs, "offset") == [(1, 0, 0), (1, 4, 0), (1, 0, 6)]
    with pytest.raises(ValueError, match="bogus"):
        reference_offsets((8, 10), refs, "bogus")


@torch.no_grad()
def test_forward_latent_equals_manual_packing_with_circular_padding():
    _, ours = _pair()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(B, 4, 5, 7, generator=g)
    ctx, pooled = torch.randn(1, T, 32, generator=g), torch.randn(1, 24, generator=g)
    out = flux_forward_latent(ours, x, torch.tensor(0.5), ctx, pooled, guidance=3.5)
    padded = torch.cat((x, x[:, :, :1]), dim=2)
    padded = torch.cat((padded, padded[..., :1]), dim=3)  # circular: wrap the first row/column
    tokens = ours(
        pack_latents(padded),
        make_image_ids(B, 3, 4),
        ctx.expand(B, -1, -1),
        make_text_ids(B, T),
        torch.full((B,), 0.5),
        pooled.expand(B, -1),
        torch.full((B,), 3.5),
    )
    assert out.shape == x.shape
    assert torch.allclose(out, unpack_latents(tokens, 6, 8)[..., :5, :7], atol=1e-6)


@torch.no_grad()
def test_forward_latent_appends_and_strips_kontext_references():
    _, ours = _pair()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(B, 4, 4, 6, generator=g)
    refs = (torch.randn(1, 4, 4, 4, generator=g), torch.randn(1, 4, 2, 6, generator=g))
    ctx, pooled = torch.randn(B, T, 32, generator=g), torch.randn(B, 24, generator=g)
    out = flux_forward_latent(ours, x, torch.tensor([0.2, 0.8]), ctx, pooled, ref_latents=refs)
    # offset method: ref 0 at (index 1, 0, 0); ref 1 is wider than the pile is tall -> below it (4 px = 2 tokens)
    ids = torch.cat(
        (make_image_ids(B, 2, 3), make_image_ids(B, 2, 2, 1), make_image_ids(B, 1, 3, 1, 2, 0)), dim=1
    )
    img = torch.cat([pack_latents(x)] + [pack_latents(r.expand(B, -1, -1, -1)) for r in refs], dim=1)
    tokens = ours(img, ids, ctx, make_text_ids(B, T), torch.tensor([0.2, 0.8]), pooled)
    assert torch.allclose(out, unpack_latents(tokens[:, :6], 4, 6), atol=1e-6)
    alone = flux_forward_latent(ours, x, torch.tensor([0.2, 0.8]), ctx, pooled)
    assert not torch.allclose(out, alone, atol=1e-4)
    with pytest.raises(ValueError, match="channels"):
        flux_forward_latent(ours, x, 0.5, ctx, pooled, ref_latents=(torch.zeros(1, 8, 4, 4),))
