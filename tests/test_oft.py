"""OFT adapters: the rotation math against an independent float64 computation, training with
algorithm "OFT", the saved file through the LoRA loader, and hook/merge agreement."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.lora.load import convert_lora, load_lora
from models.lora.math import PatchShapeError, patched_weight
from models.lora.oft import cayley_rotation
from models.lora.targets import LoraTargets
from models.patches import WeightPatch
from models.tiny import tiny_flux
from models.training import (
    TrainConfig,
    TrainState,
    adapters,
    checkpoint,
    evaluation_loss,
    train,
)
from models.training.export import lora_patches, to_key_style
from models.training.validate import sample_latents


def reference_oft(weight: np.ndarray, blocks: np.ndarray, alpha: float | None) -> np.ndarray:
    """rows of block j -> R_j^T W_j, R_j = (I + Q_j)(I - Q_j)^-1, Q norm-bounded by alpha (float64)."""
    k, n, _ = blocks.shape
    q = blocks - blocks.transpose(0, 2, 1)
    norm = np.sqrt((q**2).sum()) + 1e-8
    if alpha and norm > alpha:
        q = q * alpha / norm
    full = np.zeros((k * n, k * n))
    for j in range(k):
        full[j * n : (j + 1) * n, j * n : (j + 1) * n] = (np.eye(n) + q[j]) @ np.linalg.inv(np.eye(n) - q[j])
    return full.T @ weight


def oft_patch(blocks: torch.Tensor, alpha: float | None = None, strength: float = 1.0, **kw) -> WeightPatch:
    return WeightPatch("layer.weight", "oft", (blocks,), alpha=alpha, strength=strength, **kw)


def test_rotation_is_orthogonal_and_matches_float64_reference():
    gen = torch.Generator().manual_seed(0)
    blocks = torch.randn(6, 4, 4, generator=gen) * 0.3
    weight = torch.randn(24, 10, generator=gen)
    rot = cayley_rotation(blocks, None)
    eye = torch.eye(4).expand(6, 4, 4)
    assert torch.allclose(rot @ rot.transpose(1, 2), eye, atol=1e-6)
    for alpha in (None, 0.5):  # 0.5 is below ||Q||: the constraint acts
        got = patched_weight(weight, [oft_patch(blocks, alpha)])
        want = reference_oft(weight.double().numpy(), blocks.double().numpy(), alpha)
        assert np.abs(got.double().numpy() - want).max() < 1e-6
    assert (
        patched_weight(weight, [oft_patch(blocks, 0.5)]) - patched_weight(weight, [oft_patch(blocks)])
    ).abs().max() > 1e-3


def test_zero_blocks_and_zero_strength_keep_the_base_weight_exactly():
    weight = torch.randn(12, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(patched_weight(weight, [oft_patch(torch.zeros(3, 4, 4), 1.0)]), weight)
    busy = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(patched_weight(weight, [oft_patch(busy, strength=0.0)]), weight)


def test_a_known_block_gives_the_closed_form_rotation():
    # one 2x2 block [[0, t], [0, 0]]: Q = [[0, t], [-t, 0]], R = [[c, s], [-s, c]] with
    # c = (1 - t^2) / (1 + t^2), s = 2t / (1 + t^2); t = 0.5 gives c = 0.6, s = 0.8
    weight = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [1.0, -1.0, 0.5]])
    blocks = torch.zeros(2, 2, 2)
    blocks[0, 0, 1] = 0.5
    rows = weight.double()
    want = rows.clone()
    want[0] = 0.6 * rows[0] - 0.8 * rows[1]
    want[1] = 0.8 * rows[0] + 0.6 * rows[1]
    got = patched_weight(weight, [oft_patch(blocks)])
    assert (got.double() - want).abs().max() < 1e-6
    half = patched_weight(weight, [oft_patch(blocks, strength=0.5)])  # linear in strength
    assert (half.double() - (rows + 0.5 * (want - rows))).abs().max() < 1e-6
    rescale = torch.tensor([[2.0], [1.0], [0.5], [1.0]])
    with_rescale = WeightPatch("layer.weight", "oft", (blocks, rescale), slots=("blocks", "rescale"))
    assert (patched_weight(weight, [with_rescale]).double() - rescale.double() * want).abs().max() < 1e-6


def test_blocks_that_do_not_tile_the_rows_are_refused():
    with pytest.raises(PatchShapeError):
        patched_weight(torch.zeros(10, 3), [oft_patch(torch.zeros(3, 4, 4))])


def test_file_keys_are_recognised_in_comfyui_and_kohya_spelling():
    targets = LoraTargets(
        {"double_blocks.0.img_attn.qkv.weight": (24, 8), "double_blocks.0.img_attn.qkv.bias": (24,)}
    )
    blocks = torch.randn(6, 4, 4) * 0.1
    for prefix in ("diffusion_model.double_blocks.0.img_attn.qkv", "lora_unet_double_blocks_0_img_attn_qkv"):
        sd = {
            f"{prefix}.oft_blocks": blocks,
            f"{prefix}.alpha": torch.tensor(1.0),
            f"{prefix}.rescale": torch.ones(24, 1),
        }
        done = convert_lora(sd, targets)
        assert done.unmapped == ()
        (patch,) = done.model
        assert patch.kind == "oft" and patch.alpha == 1.0 and patch.slots == ("blocks", "rescale")
    # ComfyUI reads 3-D blocks only: anything else is reported, not applied
    flat = convert_lora(
        {"diffusion_model.double_blocks.0.img_attn.qkv.oft_blocks": torch.zeros(24, 4)}, targets
    )
    assert flat.model == () and len(flat.unmapped) == 1


# --- training ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return tiny_flux()


@pytest.fixture(scope="module")
def data(model):
    from tests.test_training_core import motif_data

    return motif_data(model)


def _merged(model, patches):
    """A copy of `model` with `patches` merged into its weights (what a loaded LoRA does)."""
    merged = copy.deepcopy(model)
    sd = merged.state_dict()
    by_key: dict[str, list[WeightPatch]] = {}
    for p in patches:
        by_key.setdefault(p.key, []).append(p)
    with torch.no_grad():
        for key, ps in by_key.items():
            sd[key].copy_(patched_weight(sd[key], ps).to(sd[key].dtype))
    return merged


def test_oft_training_lowers_the_loss_and_its_file_loads_back(model, data, tmp_path):
    cfg = TrainConfig(algorithm="OFT", steps=12, batch_size=2, learning_rate=1e-2, rank=4, alpha=1.0)
    before = evaluation_loss(model, data.samples, cfg)
    result = train(model, data, cfg)
    assert set(k.rpartition(".")[2] for k in result.lora) == {"oft_blocks", "alpha"}
    assert result.lora["diffusion_model.double_blocks.0.img_attn.qkv.oft_blocks"].shape == (96, 4, 4)
    result.adapters.hook_into(model)
    try:
        after = evaluation_loss(model, data.samples, cfg)
    finally:
        result.adapters.detach()
    assert after < 0.9 * before, (before, after)

    # a weights-only resume (existing_lora) starts from the file's blocks, not from zero
    resumed = train(
        model, data, cfg.replace(steps=1, learning_rate=1e-9), resume=TrainState(adapters=result.lora)
    )
    for key, t in result.lora.items():
        assert torch.allclose(resumed.lora[key], t, atol=1e-6), key

    path = tmp_path / "oft_12_steps_00001_.safetensors"
    checkpoint.save_safetensors(path, result.lora, result.metadata)
    lora = load_lora(path, LoraTargets.of(model))
    assert lora.unmapped == () and len(lora.model) == len(result.adapters.names)
    assert all(p.kind == "oft" for p in lora.model)

    def image(m):
        ctx, pooled = data.samples[0].context, data.samples[0].pooled
        return sample_latents(m, ctx, pooled, latent_hw=(8, 8), steps=2, guidance=1.0, seed=3)

    base = image(model)
    full, _ = lora.at(1.0, 1.0)
    off, _ = lora.at(0.0, 0.0)
    assert (image(_merged(model, full)) - base).abs().max() > 1e-3
    assert torch.equal(image(_merged(model, off)), base)
    # LoraModelLoader's path (export.lora_patches) reads the same tensors the same way
    trained = {p.key: p for p in lora_patches(result.lora, 1.0)}
    assert trained.keys() == {p.key for p in full}
    for p in full:
        assert torch.equal(trained[p.key].tensors[0], p.tensors[0]) and trained[p.key].alpha == p.alpha


def test_oft_refuses_diffusers_keys():
    with pytest.raises(ValueError, match="OFT"):
        TrainConfig(algorithm="OFT", key_style="diffusers")
    sd = {"diffusion_model.double_blocks.0.img_attn.qkv.oft_blocks": torch.zeros(2, 4, 4),
          "diffusion_model.double_blocks.0.img_attn.qkv.alpha": torch.tensor(1.0)}  # fmt: skip
    with pytest.raises(ValueError, match="OFT"):
        to_key_style(sd, "diffusers")
    kohya = to_key_style(sd, "kohya")
    assert set(kohya) == {
        "lora_unet_double_blocks_0_img_attn_qkv.oft_blocks",
        "lora_unet_double_blocks_0_img_attn_qkv.alpha",
    }


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_hooked_oft_equals_the_loader_merge(strength):
    layer = torch.nn.Linear(12, 20).requires_grad_(False)
    model = torch.nn.Module()
    model.double_blocks = torch.nn.ModuleList([torch.nn.Module()])
    model.double_blocks[0].img_attn = torch.nn.Module()
    model.double_blocks[0].img_attn.qkv = layer
    ad = adapters.create(model, algorithm="OFT", rank=4, alpha=0.8, targets="attention")
    with torch.no_grad():
        for p in ad.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(7)) * 0.4)
    x = torch.randn(3, 12, generator=torch.Generator().manual_seed(8))
    ad.hook_into(model, strength=strength)
    hooked = layer(x)
    ad.detach()
    sd = adapters.lora_state_dict(ad)
    lora = convert_lora(sd, LoraTargets.of(model))
    assert lora.unmapped == ()
    (patch,) = lora.at(strength, 0.0)[0]
    merged = patched_weight(layer.weight, [patch])
    assert (hooked - F.linear(x, merged, layer.bias)).abs().max() < 1e-5
    assert (hooked - layer(x)).abs().max() > 1e-3  # the rotation does change the output
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
