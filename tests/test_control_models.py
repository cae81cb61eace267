"""FLUX ControlNets: layouts, detection and fidelity.

diffusers-style (InstantX single, Union mode embedding, Alimama inpainting) against diffusers'
FluxControlNetModel + FluxTransformer2DModel with controlnet_block_samples (fp32, 1e-5); XLabs and
Mistoline against a float64 reference written here from flux-formats §8.1 (cyclic injection).
"""

from __future__ import annotations

import pytest
import torch
from diffusers import FluxControlNetModel, FluxTransformer2DModel
from safetensors.torch import save_file
from torch import nn

from models.control.apply import ControlInputs, PreparedControl, control_extensions
from models.control.load import load_controlnet
from models.control.model import FluxControlNet, spread
from models.control.params import DIFFUSERS, MISTOLINE, XLABS, ControlNetParams, detect_controlnet_params
from models.flux.apply import flux_forward_latent
from models.flux.model import Flux
from models.flux.packing import make_image_ids, make_text_ids, pack_latents, unpack_latents
from models.flux.params import FluxParams
from models.formats.control_flux import (
    bfl_to_diffusers_controlnet,
    controlnet_kind,
    diffusers_to_bfl_controlnet,
    mistoline_to_bfl_controlnet,
)
from models.formats.diffusers_flux import diffusers_to_bfl_transformer
from models.formats.errors import WrongFamilyError

MAIN = FluxParams(
    in_channels=64,
    out_channels=64,
    vec_in_dim=24,
    context_in_dim=32,
    hidden_size=64,
    num_heads=2,
    depth=5,
    depth_single_blocks=7,
    axes_dim=(8, 12, 12),
)


def _config(p: FluxParams, **extra: object) -> dict:
    return dict(
        patch_size=1,
        in_channels=p.in_channels,
        num_layers=p.depth,
        num_single_layers=p.depth_single_blocks,
        attention_head_dim=p.head_dim,
        num_attention_heads=p.num_heads,
        joint_attention_dim=p.context_in_dim,
        pooled_projection_dim=p.vec_in_dim,
        guidance_embeds=p.guidance_embed,
        axes_dims_rope=list(p.axes_dim),
        **extra,
    )


def _randomize(module: nn.Module, seed: int, std: float = 0.1) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.parameters():
            t.copy_(torch.randn(t.shape, generator=gen) * std)
    return module.eval()


def _diffusers_pair(
    depth: int, single: int, *, num_mode: int | None = None, hint_channels: int = 16, seed: int = 0
):
    main = _randomize(FluxTransformer2DModel(**_config(MAIN), out_channels=None), seed)
    cfg = _config(
        FluxParams(**{**MAIN.__dict__, "depth": depth, "depth_single_blocks": single}), num_mode=num_mode
    )
    control = FluxControlNetModel(**cfg)
    if hint_channels != 16:  # Alimama's inpainting ControlNet: a wider hint embedder
        control.controlnet_x_embedder = nn.Linear(hint_channels * 4, MAIN.hidden_size)
    return main, _randomize(control, seed + 1)


def _ours(main_d: FluxTransformer2DModel, control_d: FluxControlNetModel) -> tuple[Flux, FluxControlNet]:
    main = Flux(MAIN)
    main.load_state_dict(diffusers_to_bfl_transformer(main_d.state_dict()))
    sd = diffusers_to_bfl_controlnet(control_d.state_dict())
    assert controlnet_kind(control_d.state_dict()) == DIFFUSERS
    params = detect_controlnet_params({k: v.shape for k, v in sd.items()}, DIFFUSERS, axes_dim=MAIN.axes_dim)
    control = FluxControlNet(params)
    control.load_state_dict(sd)
    return main.eval(), control.eval()


def _inputs(seed: int, b: int = 2, h: int = 6, w: int = 4, hint_channels: int = 16):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 16, h, w, generator=gen)
    hint = torch.randn(b, hint_channels, h, w, generator=gen)
    ctx = torch.randn(b, 5, MAIN.context_in_dim, generator=gen)
    pooled = torch.randn(b, MAIN.vec_in_dim, generator=gen)
    t = torch.tensor([0.7, 0.3])[:b]
    g = torch.tensor([3.5, 2.0])[:b]
    return x, hint, ctx, pooled, t, g


def _diffusers_velocity(main_d, control_d, x, hint, ctx, pooled, t, g, scale, mode=None):
    b, _, h, w = x.shape
    img_ids = make_image_ids(1, h // 2, w // 2)[0]
    txt_ids = make_text_ids(1, ctx.shape[1])[0]
    with torch.no_grad():
        double, single = control_d(
            hidden_states=pack_latents(x),
            controlnet_cond=pack_latents(hint),
            controlnet_mode=mode,
            conditioning_scale=scale,
            encoder_hidden_states=ctx,
            pooled_projections=pooled,
            timestep=t,
            img_ids=img_ids,
            txt_ids=txt_ids,
            guidance=g,
            return_dict=False,
        )
        out = main_d(
            hidden_states=pack_latents(x),
            encoder_hidden_states=ctx,
            pooled_projections=pooled,
            timestep=t,
            img_ids=img_ids,
            txt_ids=txt_ids,
            guidance=g,
            controlnet_block_samples=double,
            controlnet_single_block_samples=single,
            return_dict=False,
        )[0]
    return unpack_latents(out, h, w)


def _our_velocity(main, control, x, hint, ctx, pooled, t, g, scale, modes=()):
    from models.control.apply import ControlApplication, ControlNetHandle

    handle = ControlNetHandle(control).with_control_type(modes)
    app = ControlApplication(handle, torch.zeros(1, 3, 8, 8), strength=scale, vae=object())
    prepared = PreparedControl(app, pack_latents(hint), sigma_start=1.0, sigma_end=0.0)
    ext = control_extensions(
        [prepared],
        ControlInputs(x, t, ctx, pooled, g),
        0.5,
        depth=MAIN.depth,
        depth_single=MAIN.depth_single_blocks,
    )
    with torch.no_grad():
        return flux_forward_latent(main, x, t, ctx, pooled, g, extensions=ext)


@pytest.mark.parametrize(("depth", "single"), [(2, 3), (5, 0), (3, 7)])
def test_diffusers_controlnet_matches_diffusers(depth, single):
    main_d, control_d = _diffusers_pair(depth, single)
    main, control = _ours(main_d, control_d)
    args = _inputs(1)
    ref = _diffusers_velocity(main_d, control_d, *args, scale=0.7)
    ours = _our_velocity(main, control, *args, scale=0.7)
    plain = _our_velocity(main, control, *args, scale=0.0)
    assert (ref - plain).abs().max() > 1e-2  # the ControlNet changes the prediction
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_union_mode_embedding_matches_diffusers():
    main_d, control_d = _diffusers_pair(2, 2, num_mode=10)
    main, control = _ours(main_d, control_d)
    assert control.params.num_modes == 10
    args = _inputs(2)
    ref = _diffusers_velocity(main_d, control_d, *args, scale=1.0, mode=torch.tensor([[4], [4]]))
    ours = _our_velocity(main, control, *args, scale=1.0, modes=(4,))
    other = _our_velocity(main, control, *args, scale=1.0, modes=(1,))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert (ours - other).abs().max() > 1e-3  # the mode token matters


def test_inpainting_controlnet_matches_diffusers():
    main_d, control_d = _diffusers_pair(2, 0, hint_channels=17)
    main, control = _ours(main_d, control_d)
    assert control.params.concat_mask and control.params.hint_channels == 17
    args = _inputs(3, hint_channels=17)
    ref = _diffusers_velocity(main_d, control_d, *args, scale=1.0)
    ours = _our_velocity(main, control, *args, scale=1.0)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_diffusers_layout_round_trip_is_exact():
    _, control_d = _diffusers_pair(2, 3, num_mode=10)
    sd = control_d.state_dict()
    back = bfl_to_diffusers_controlnet(diffusers_to_bfl_controlnet(sd))
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_spread_rules():
    r = [torch.tensor(float(i)) for i in range(5)]
    assert [int(t) for t in spread(r, 19, cyclic=False)] == [i // 4 for i in range(19)]
    assert [int(t) for t in spread(r[:2], 19, cyclic=True)] == [i % 2 for i in range(19)]
    ten = [torch.tensor(float(i)) for i in range(10)]
    assert [int(t) for t in spread(ten, 38, cyclic=False)] == [i // 4 for i in range(38)]
    assert spread([], 19, cyclic=False) == ()


# --- XLabs / Mistoline: float64 reference from flux-formats §8.1 ------------------------------------------------


def _xlabs_params(kind: str, depth: int = 2, single: int = 0) -> ControlNetParams:
    trunk = FluxParams(**{**MAIN.__dict__, "depth": depth, "depth_single_blocks": single})
    return ControlNetParams(trunk=trunk, kind=kind, hint_channels=16)


def _random_module(module: nn.Module, seed: int) -> nn.Module:
    return _randomize(module, seed, std=0.1).double()


def _reference_residuals(control: FluxControlNet, x, pixels, ctx, pooled, t, g):
    """§8.1 step by step in float64: hint convs (SiLU between), pack, pos_embed_input added to img_in(x),
    trunk double blocks on [txt; img], controlnet_blocks on the img tokens."""
    convs = [
        m
        for m in (
            control.input_hint_block if control.params.kind == XLABS else control.input_cond_block.encoder
        )
        if isinstance(m, nn.Conv2d)
    ]
    h = pixels * 2 - 1
    for i, conv in enumerate(convs):
        h = torch.nn.functional.conv2d(h, conv.weight, conv.bias, stride=conv.stride, padding=conv.padding)
        if i < len(convs) - 1:
            h = torch.nn.functional.silu(h)
    b, _, hh, ww = x.shape
    tokens = pack_latents(h)
    img = control.img_in(pack_latents(x)) + control.pos_embed_input(tokens)
    from models.flux.layers import timestep_embedding

    vec = (
        control.time_in(timestep_embedding(t, 256).double())
        + control.guidance_in(timestep_embedding(g, 256).double())
        + control.vector_in(pooled)
    )
    txt = control.txt_in(ctx)
    ids = torch.cat((make_text_ids(b, ctx.shape[1]), make_image_ids(b, hh // 2, ww // 2)), dim=1).double()
    pe = control.pe_embedder(ids)
    out = []
    for block, zero in zip(control.double_blocks, control.controlnet_blocks):
        img, txt = block(img, txt, vec, pe)
        r = zero.linear(img) if control.params.kind == MISTOLINE else zero(img)
        out.append(torch.nn.functional.silu(r) if control.params.kind == MISTOLINE else r)
    return out


@pytest.mark.parametrize("kind", [XLABS, MISTOLINE])
def test_xlabs_cyclic_injection_matches_float64_reference(kind):
    control = _random_module(FluxControlNet(_xlabs_params(kind)), 5)
    main = _random_module(Flux(MAIN), 6)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 16, 4, 6, generator=gen, dtype=torch.float64)
    pixels = torch.rand(1, 3, 32, 48, generator=gen, dtype=torch.float64)
    ctx = torch.randn(2, 5, MAIN.context_in_dim, generator=gen, dtype=torch.float64)
    pooled = torch.randn(2, MAIN.vec_in_dim, generator=gen, dtype=torch.float64)
    t, g = torch.tensor([0.6, 0.6], dtype=torch.float64), torch.tensor([3.5, 3.5], dtype=torch.float64)
    strength = 0.8
    with torch.no_grad():
        ref_r = _reference_residuals(control, x, pixels.expand(2, -1, -1, -1), ctx, pooled, t, g)
        # main model with residual i % n after double block i, no single residuals (§8.1)
        ref = flux_forward_latent(
            main,
            x,
            t,
            ctx,
            pooled,
            g,
            extensions=__import__("models.flux.extensions", fromlist=["FluxExtensions"]).FluxExtensions(
                double_residuals=tuple(ref_r[i % len(ref_r)] * strength for i in range(MAIN.depth))
            ),
        )
        from models.control.apply import ControlApplication, ControlNetHandle, prepare_hint

        app = ControlApplication(ControlNetHandle(control), pixels, strength=strength)
        prepared = PreparedControl(app, prepare_hint(app, 4, 6), 1.0, 0.0)
        ext = control_extensions(
            [prepared],
            ControlInputs(x, t, ctx, pooled, g),
            0.6,
            depth=MAIN.depth,
            depth_single=MAIN.depth_single_blocks,
        )
        ours = flux_forward_latent(main, x, t, ctx, pooled, g, extensions=ext)
        plain = flux_forward_latent(main, x, t, ctx, pooled, g)
    assert ext is not None and ext.single_residuals is None
    assert (ref - plain).abs().max() > 1e-3
    # RoPE rotations are computed from float32 ids (as in the main model), hence not 1e-12
    torch.testing.assert_close(ours, ref, atol=1e-8, rtol=1e-6)


def test_chained_controls_sum_and_windows():
    control = _random_module(FluxControlNet(_xlabs_params(XLABS)), 8).float()
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(1, 16, 4, 4, generator=gen)
    pixels = torch.rand(1, 3, 32, 32, generator=gen)
    inputs = ControlInputs(
        x,
        torch.tensor([0.5]),
        torch.randn(1, 5, MAIN.context_in_dim, generator=gen),
        torch.randn(1, MAIN.vec_in_dim, generator=gen),
        torch.tensor([3.5]),
    )
    from models.control.apply import ControlApplication, ControlNetHandle, control_residuals, prepare_controls

    handle = ControlNetHandle(control)
    first = ControlApplication(handle, pixels, strength=0.5)
    second = ControlApplication(
        handle, pixels, strength=0.25, start_percent=0.0, end_percent=0.3, previous=first
    )

    def sigma_of(p: float) -> float:
        return 1.0 - p

    prepared = prepare_controls(second, 4, 4, percent_to_sigma=sigma_of)
    both = control_residuals(prepared, inputs, 0.8, depth=4, depth_single=3)
    only_first = control_residuals(prepared[:1], inputs, 0.8, depth=4, depth_single=3)
    assert both is not None and only_first is not None
    torch.testing.assert_close(both[0][0], only_first[0][0] * 1.5, rtol=1e-5, atol=1e-6)  # 0.5 + 0.25
    late = control_residuals(
        prepared, inputs, 0.5, depth=4, depth_single=3
    )  # second inactive below sigma 0.7
    torch.testing.assert_close(late[0][0], only_first[0][0])
    assert control_residuals(prepared, inputs, 1.5, depth=4, depth_single=3) is None  # outside both windows


def test_mistoline_keys_and_file_loading(tmp_path):
    control = _randomize(FluxControlNet(_xlabs_params(MISTOLINE, depth=2, single=2)), 3)
    sd = {
        k.replace("controlnet_single_blocks.", "single_controlnet_blocks."): v
        for k, v in control.state_dict().items()
    }
    assert controlnet_kind(sd) == MISTOLINE
    assert mistoline_to_bfl_controlnet(sd).keys() == control.state_dict().keys()
    path = tmp_path / "mistoline.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    loaded = load_controlnet(path)
    assert loaded.params.kind == MISTOLINE and loaded.params.trunk.depth_single_blocks == 2
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in control.state_dict().items())


def test_loading_diffusers_file_and_folder(tmp_path):
    _, control_d = _diffusers_pair(2, 2, num_mode=10)
    control_d.save_pretrained(tmp_path / "union")
    loaded = load_controlnet(tmp_path / "union")
    assert loaded.params.kind == DIFFUSERS and loaded.params.num_modes == 10
    assert loaded.params.trunk.axes_dim == MAIN.axes_dim  # from config.json
    expect = diffusers_to_bfl_controlnet(control_d.state_dict())
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expect.items())
    with pytest.raises(WrongFamilyError):
        save_file({"img_in.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
        load_controlnet(tmp_path / "other.safetensors")
