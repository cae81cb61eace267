"""diffusers <-> BFL converters for the FLUX transformer and autoencoder: exact round trips, real layouts."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel

from models.flux.autoencoder import FLUX_AE, AutoEncoder, AutoEncoderParams
from models.flux.model import Flux
from models.flux.params import FLUX_DEV, FLUX_FILL, FLUX_SCHNELL, FluxParams
from models.formats.diffusers_flux import (
    bfl_flux_group,
    bfl_to_diffusers_transformer,
    diffusers_flux_group,
    diffusers_to_bfl_transformer,
)
from models.formats.diffusers_vae import bfl_to_diffusers_vae, diffusers_to_bfl_vae

TINY = FluxParams(
    in_channels=16,
    out_channels=16,
    vec_in_dim=24,
    context_in_dim=32,
    hidden_size=64,
    num_heads=4,
    depth=2,
    depth_single_blocks=3,
    axes_dim=(4, 6, 6),
)
TINY_AE = AutoEncoderParams(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1)


def diffusers_transformer_config(p: FluxParams) -> dict:
    return dict(
        patch_size=1,
        in_channels=p.in_channels,
        out_channels=p.out_channels,
        num_layers=p.depth,
        num_single_layers=p.depth_single_blocks,
        attention_head_dim=p.head_dim,
        num_attention_heads=p.num_heads,
        joint_attention_dim=p.context_in_dim,
        pooled_projection_dim=p.vec_in_dim,
        guidance_embeds=p.guidance_embed,
        axes_dims_rope=p.axes_dim,
    )


def tiny_diffusers_transformer(
    p: FluxParams = TINY, seed: int = 0, std: float = 0.1
) -> FluxTransformer2DModel:
    """diffusers transformer with every tensor random (norm weights included, so swaps show), eval mode."""
    torch.manual_seed(seed)
    model = FluxTransformer2DModel(**diffusers_transformer_config(p)).eval()
    with torch.no_grad():
        for t in model.parameters():
            t.normal_(0.0, std)
    return model


def diffusers_vae_config(p: AutoEncoderParams) -> dict:
    n = len(p.ch_mult)
    return dict(
        in_channels=p.in_channels,
        out_channels=p.out_ch,
        latent_channels=p.z_channels,
        block_out_channels=tuple(p.ch * m for m in p.ch_mult),
        layers_per_block=p.num_res_blocks,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        norm_num_groups=32,
        act_fn="silu",
        use_quant_conv=False,
        use_post_quant_conv=False,
        mid_block_add_attention=True,
        scaling_factor=p.scale_factor,
        shift_factor=p.shift_factor,
    )


def tiny_diffusers_vae(p: AutoEncoderParams = TINY_AE, seed: int = 0) -> AutoencoderKL:
    """diffusers AutoencoderKL with default init perturbed (GroupNorm affines included), eval mode."""
    torch.manual_seed(seed)
    model = AutoencoderKL(**diffusers_vae_config(p)).eval()
    with torch.no_grad():
        for t in model.parameters():
            t.add_(torch.randn_like(t) * 0.05)
    return model


def _assert_same_dict(a: dict, b: dict) -> None:
    assert set(a) == set(b), (sorted(set(a) ^ set(b)))[:10]
    for k in a:
        assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


def test_transformer_round_trip_is_exact_both_ways():
    d_sd = tiny_diffusers_transformer().state_dict()
    bfl = diffusers_to_bfl_transformer(d_sd)
    _assert_same_dict(bfl_to_diffusers_transformer(bfl), d_sd)
    _assert_same_dict(diffusers_to_bfl_transformer(bfl_to_diffusers_transformer(bfl)), bfl)


def test_transformer_conversion_fits_our_module_and_fuses_in_row_order():
    d_sd = tiny_diffusers_transformer().state_dict()
    bfl = diffusers_to_bfl_transformer(d_sd)
    Flux(TINY).load_state_dict(bfl, strict=True)
    h = TINY.hidden_size
    qkv = bfl["double_blocks.1.img_attn.qkv.weight"]
    assert torch.equal(qkv[:h], d_sd["transformer_blocks.1.attn.to_q.weight"])
    assert torch.equal(qkv[2 * h :], d_sd["transformer_blocks.1.attn.to_v.weight"])
    assert torch.equal(
        bfl["double_blocks.0.txt_attn.qkv.bias"][h : 2 * h], d_sd["transformer_blocks.0.attn.add_k_proj.bias"]
    )
    lin1 = bfl["single_blocks.2.linear1.bias"]
    assert torch.equal(lin1[3 * h :], d_sd["single_transformer_blocks.2.proj_mlp.bias"])
    assert torch.equal(
        bfl["single_blocks.2.norm.key_norm.scale"], d_sd["single_transformer_blocks.2.attn.norm_k.weight"]
    )
    # diffusers' final norm holds (scale, shift); BFL's adaLN (shift, scale)
    ada = bfl["final_layer.adaLN_modulation.1.weight"]
    assert torch.equal(ada[:h], d_sd["norm_out.linear.weight"][h:])
    assert torch.equal(ada[h:], d_sd["norm_out.linear.weight"][:h])


def test_transformer_conversion_by_groups_equals_whole():
    """The lazy loader converts one block at a time: grouping must not change the result."""
    d_sd = tiny_diffusers_transformer().state_dict()
    whole = diffusers_to_bfl_transformer(d_sd)
    groups: dict[str, dict] = {}
    for k, v in d_sd.items():
        groups.setdefault(diffusers_flux_group(k), {})[k] = v
    assert len(groups) > TINY.depth + TINY.depth_single_blocks
    merged: dict = {}
    for g in groups.values():
        merged.update(diffusers_to_bfl_transformer(g))
    _assert_same_dict(merged, whole)
    back: dict = {}
    bfl_groups: dict[str, dict] = {}
    for k, v in whole.items():
        bfl_groups.setdefault(bfl_flux_group(k), {})[k] = v
    for g in bfl_groups.values():
        back.update(bfl_to_diffusers_transformer(g))
    _assert_same_dict(back, d_sd)


@pytest.mark.parametrize("params", [FLUX_DEV, FLUX_SCHNELL, FLUX_FILL], ids=["dev", "schnell", "fill"])
def test_full_size_layouts_match_key_for_key(params):
    """Real-size diffusers models (on meta) convert to exactly our module's keys and shapes, and back."""
    with torch.device("meta"):
        d_sd = FluxTransformer2DModel(**diffusers_transformer_config(params)).state_dict()
        ours = Flux(params).state_dict()
    bfl = diffusers_to_bfl_transformer(d_sd)
    assert {k: tuple(v.shape) for k, v in bfl.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    assert len(ours) == (780 if params.guidance_embed else 776)
    back = bfl_to_diffusers_transformer(bfl)
    assert {k: tuple(v.shape) for k, v in back.items()} == {k: tuple(v.shape) for k, v in d_sd.items()}


def test_transformer_conversion_errors_name_the_key():
    d_sd = tiny_diffusers_transformer().state_dict()
    partial = {k: v for k, v in d_sd.items() if k != "transformer_blocks.0.attn.to_k.weight"}
    with pytest.raises(ValueError, match=r"transformer_blocks\.0\.attn\.to_k"):
        diffusers_to_bfl_transformer(partial)
    with pytest.raises(ValueError, match="controlnet_x_embedder"):
        diffusers_to_bfl_transformer({"controlnet_x_embedder.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="linear1.bias"):
        bfl_to_diffusers_transformer({"single_blocks.0.linear1.bias": torch.zeros(10)})
    with pytest.raises(ValueError, match="foo"):
        bfl_to_diffusers_transformer({"double_blocks.0.foo.weight": torch.zeros(2)})


def test_vae_round_trip_is_exact_and_fits_our_module():
    d_sd = tiny_diffusers_vae().state_dict()
    bfl = diffusers_to_bfl_vae(d_sd)
    AutoEncoder(TINY_AE).load_state_dict(bfl, strict=True)
    assert bfl["encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    # decoder levels run in opposite orders: BFL up.3 (lowest resolution) is diffusers up_blocks.0
    assert torch.equal(
        bfl["decoder.up.3.block.0.conv1.weight"], d_sd["decoder.up_blocks.0.resnets.0.conv1.weight"]
    )
    _assert_same_dict(bfl_to_diffusers_vae(bfl), d_sd)


def test_vae_full_size_layout_matches_key_for_key():
    with torch.device("meta"):
        d_sd = AutoencoderKL(**diffusers_vae_config(FLUX_AE)).state_dict()
        ours = AutoEncoder(FLUX_AE).state_dict()
    bfl = diffusers_to_bfl_vae(d_sd)
    assert len(ours) == 244
    assert {k: tuple(v.shape) for k, v in bfl.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    back = bfl_to_diffusers_vae(bfl)
    assert {k: tuple(v.shape) for k, v in back.items()} == {k: tuple(v.shape) for k, v in d_sd.items()}


def test_vae_legacy_attention_names_and_errors():
    w = torch.randn(64, 64)
    legacy = {
        "decoder.mid_block.attentions.0.query.weight": w,
        "decoder.mid_block.attentions.0.proj_attn.bias": w[0],
    }
    out = diffusers_to_bfl_vae(legacy, num_levels=2)
    assert torch.equal(out["decoder.mid.attn_1.q.weight"][:, :, 0, 0], w)
    assert torch.equal(out["decoder.mid.attn_1.proj_out.bias"], w[0])
    with pytest.raises(ValueError, match="quant_conv"):
        diffusers_to_bfl_vae({"quant_conv.weight": w})
    with pytest.raises(ValueError, match="bogus"):
        bfl_to_diffusers_vae({"encoder.down.0.block.0.bogus.weight": w})
