"""XLabs IP-Adapter: the per-block attention against a float64 reference of flux-formats §9.1, file
loading, and ApplyFluxIPAdapter through the executor (ip_scale 0 is exactly the plain model)."""

from __future__ import annotations

from typing import Any

import torch
from safetensors.torch import save_file

from models.control.ipadapter import IPAttention, load_xlabs_ipadapter
from models.flux.apply import flux_forward_latent
from models.flux.extensions import FluxExtensions
from models.tiny import TINY_FLUX_DEV, tiny_flux
from models.tiny.control import TINY_CLIP_VISION, tiny_ipadapter, tiny_vision_tower
from models.tiny.weights import module_state
from models.vision.load import LoadedVision
from nodes.control import ipadapter as ip_nodes
from nodes.control.ipadapter import FluxIPAdapterHandle
from nodes.control.vision import ClipVisionHandle
from tests.test_control_nodes import ksampler, make_values, run


def test_ip_attention_matches_float64_reference():
    adapter = tiny_ipadapter(3).double()
    gen = torch.Generator().manual_seed(1)
    embeds = torch.randn(2, TINY_CLIP_VISION.projection_dim, generator=gen, dtype=torch.float64)
    tokens = adapter.image_tokens(embeds)
    proj = adapter.ip_adapter_proj_model
    raw = (embeds @ proj.proj.weight.T + proj.proj.bias).reshape(2, 4, -1)
    ref_tokens = torch.nn.functional.layer_norm(raw, (raw.shape[-1],), proj.norm.weight, proj.norm.bias, 1e-5)
    torch.testing.assert_close(tokens, ref_tokens, rtol=1e-12, atol=1e-12)
    heads, head_dim, length = 2, 64, 10
    img_q = torch.randn(2, heads, length, head_dim, generator=gen, dtype=torch.float64)
    img = torch.randn(2, length, heads * head_dim, generator=gen, dtype=torch.float64)
    delta = IPAttention(adapter, tokens, 0.7)(1, img_q, img)
    proc = adapter.double_blocks[1].processor
    k = tokens @ proc.ip_adapter_double_stream_k_proj.weight.T + proc.ip_adapter_double_stream_k_proj.bias
    v = tokens @ proc.ip_adapter_double_stream_v_proj.weight.T + proc.ip_adapter_double_stream_v_proj.bias
    k, v = (t.reshape(2, 4, heads, head_dim).transpose(1, 2) for t in (k, v))
    weights = torch.softmax(img_q @ k.transpose(-1, -2) / head_dim**0.5, dim=-1)
    ref = 0.7 * (weights @ v).transpose(1, 2).reshape(2, length, heads * head_dim)
    torch.testing.assert_close(delta, ref, rtol=1e-10, atol=1e-12)


def test_hook_reaches_every_double_block_and_scale_zero_is_exact():
    model = tiny_flux(TINY_FLUX_DEV, 0)
    adapter = tiny_ipadapter(3)
    gen = torch.Generator().manual_seed(2)
    tokens = adapter.image_tokens(torch.randn(1, TINY_CLIP_VISION.projection_dim, generator=gen))
    x = torch.randn(1, 16, 4, 6, generator=gen)
    args = (
        x,
        torch.tensor([0.5]),
        torch.randn(1, 5, TINY_FLUX_DEV.context_in_dim, generator=gen),
        torch.randn(1, TINY_FLUX_DEV.vec_in_dim, generator=gen),
        3.5,
    )
    with torch.no_grad():
        plain = flux_forward_latent(model, *args)
        zero = flux_forward_latent(
            model, *args, extensions=FluxExtensions(double_attention=(IPAttention(adapter, tokens, 0.0),))
        )
        on = flux_forward_latent(
            model, *args, extensions=FluxExtensions(double_attention=(IPAttention(adapter, tokens, 1.0),))
        )
    assert torch.equal(zero, plain)
    assert (on - plain).abs().max() > 1e-3


def test_loading_reads_tokens_and_blocks_from_shapes(tmp_path):
    adapter = tiny_ipadapter(4, tokens=16)
    save_file(module_state(adapter), str(tmp_path / "ip.safetensors"))
    loaded = load_xlabs_ipadapter(tmp_path / "ip.safetensors")
    assert loaded.ip_adapter_proj_model.num_tokens == 16 and len(loaded.double_blocks) == TINY_FLUX_DEV.depth
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in adapter.state_dict().items())


def test_apply_flux_ip_adapter_through_the_executor():
    values = make_values()
    tower = tiny_vision_tower(TINY_CLIP_VISION, 5)
    handle = FluxIPAdapterHandle(tiny_ipadapter(3), ClipVisionHandle(LoadedVision(tower, TINY_CLIP_VISION)))
    values["ip"] = handle

    def with_scale(scale: float) -> torch.Tensor:
        prompt: dict[str, Any] = {
            "patched": {
                "class_type": "ApplyFluxIPAdapter",
                "inputs": {
                    "model": ["given_model", 0],
                    "ip_adapter_flux": ["given_ip", 0],
                    "image": ["given_image", 0],
                    "ip_scale": scale,
                },
            }
        }
        prompt |= ksampler(["given_pos", 0], ["given_neg", 0])
        prompt["sample"]["inputs"]["model"] = ["patched", 0]
        return run(prompt, values, extra_modules=(ip_nodes,))

    plain = run(ksampler(["given_pos", 0], ["given_neg", 0]), values)
    assert torch.equal(with_scale(0.0), plain)
    assert (with_scale(0.93) - plain).abs().max() > 1e-3
