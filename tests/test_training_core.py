"""models.training on tiny random weights: learning, resume, atomic saves, shards, adapter math."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.sampling.model_sampling import FlowModelSampling
from models.tiny import tiny_flux
from models.training import (
    Sample,
    TrainConfig,
    TrainingData,
    adapters,
    checkpoint,
    evaluation_loss,
    load_shards,
    load_state,
    save_shards,
    state_path_for,
    train,
)
from models.training.flow import flow_loss, resolution_mu, time_shift
from models.training.schedule import lr_at
from models.training.validate import sample_latents


def motif_latent(i: int) -> torch.Tensor:
    """One simple motif (a bright square) with a little per-image variation, LATENT space [16, 8, 8]."""
    lat = torch.zeros(16, 8, 8)
    lat[:, 2:6, 2:6] = 1.0
    return lat + 0.05 * torch.randn(16, 8, 8, generator=torch.Generator().manual_seed(i))


@pytest.fixture(scope="module")
def model():
    return tiny_flux()


def motif_data(model) -> TrainingData:
    """Four motif latents with one prompt, and the empty prompt caption dropout uses."""
    ctx = torch.randn(8, model.params.context_in_dim, generator=torch.Generator().manual_seed(5))
    pooled = torch.randn(model.params.vec_in_dim, generator=torch.Generator().manual_seed(6))
    empty = (torch.zeros(8, model.params.context_in_dim), torch.zeros(model.params.vec_in_dim))
    return TrainingData(tuple(Sample(motif_latent(i), ctx, pooled) for i in range(4)), *empty)


@pytest.fixture(scope="module")
def data(model):
    return motif_data(model)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched(model, before):
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all("forward" not in vars(m) for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())


def test_training_lowers_loss_and_pulls_samples_to_the_motif(model, data):
    before = snapshot(model)
    cfg = TrainConfig(
        steps=30, batch_size=2, learning_rate=1e-2, rank=4, alpha=4.0, gradient_checkpointing=True
    )
    eval_before = evaluation_loss(model, data.samples, cfg)
    result = train(model, data, cfg)
    assert_untouched(model, before)  # hooks and checkpoint wrappers gone, weights equal
    result.adapters.hook_into(model)
    try:
        eval_after = evaluation_loss(model, data.samples, cfg)
        with_lora = sample_latents(
            model, data.samples[0].context, data.samples[0].pooled, latent_hw=(8, 8), guidance=1.0, seed=3
        )
    finally:
        result.adapters.detach()
    without = sample_latents(
        model, data.samples[0].context, data.samples[0].pooled, latent_hw=(8, 8), guidance=1.0, seed=3
    )
    # the fixed-timestep evaluation loss drops by at least 40 % in 30 steps
    assert eval_after <= 0.6 * eval_before, (eval_before, eval_after)
    target = torch.stack([s.latent for s in data.samples]).mean(0)
    d_with, d_without = F.mse_loss(with_lora[0], target).item(), F.mse_loss(without[0], target).item()
    assert d_with < 0.7 * d_without, (d_with, d_without)
    assert_untouched(model, before)


def _save_final(result, path: Path) -> bytes:
    checkpoint.save_safetensors(path, result.lora, result.metadata)
    return path.read_bytes()


def test_resume_gives_the_same_lora_bytes(model, data, tmp_path):
    cfg = TrainConfig(
        steps=6,
        batch_size=3,
        grad_accumulation_steps=2,
        learning_rate=3e-3,
        rank=2,
        ema_decay=0.5,
        caption_dropout=0.3,
        lr_schedule="cosine",
        warmup_steps=2,
        max_grad_norm=1.0,
    )
    straight = _save_final(train(model, data, cfg), tmp_path / "straight.safetensors")

    class StopAt:
        def __init__(self, n):
            self.n, self.calls = n, 0

        def __call__(self):
            self.calls += 1
            return self.calls >= self.n

    half = train(
        model, data, cfg, checkpoint_dir=tmp_path / "ck", checkpoint_name="run", should_stop=StopAt(3)
    )
    assert half.stopped and half.state.step == 3
    saved = tmp_path / "ck" / "run_3_steps.safetensors"
    assert saved.is_file() and state_path_for(saved).is_file()
    state = load_state(state_path_for(saved))
    assert state.step == 3 and state.cursor == 3 * 2 * 3
    resumed = train(model, data, cfg, resume=state)
    assert resumed.state.losses[:3] == half.state.losses
    assert _save_final(resumed, tmp_path / "resumed.safetensors") == straight


def test_atomic_save_survives_a_crash(tmp_path, monkeypatch):
    path = tmp_path / "lora.safetensors"
    checkpoint.save_safetensors(path, {"a": torch.ones(3)}, {"v": "1"})
    good = path.read_bytes()

    def crash_mid_write(tmp, blob):
        Path(tmp).write_bytes(blob[:20])
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_blob", crash_mid_write)
    with pytest.raises(OSError):
        checkpoint.save_safetensors(path, {"a": torch.zeros(3)}, {"v": "2"})
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["lora.safetensors"]  # no temp file left

    def crash_before_rename(src, dst):
        raise KeyboardInterrupt  # process killed between the write and the rename

    monkeypatch.setattr(checkpoint.os, "replace", crash_before_rename)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_safetensors(path, {"a": torch.zeros(3)}, {"v": "3"})
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["lora.safetensors"]


def test_dataset_shards_are_safetensors_and_round_trip(tmp_path):
    records = [
        {"latent": {"samples": torch.randn(1, 16, 4, 6)},
         "conditioning": [[torch.randn(1, 5, 8), {"pooled_output": torch.randn(1, 4), "guidance": 1.0 + i}]]}
        for i in range(5)
    ]  # fmt: skip
    paths = save_shards(tmp_path / "ds", records, shard_size=2)
    assert [p.name for p in paths] == [
        "shard_0000.safetensors",
        "shard_0001.safetensors",
        "shard_0002.safetensors",
    ]
    for p in paths:  # a safetensors file starts with its little-endian header length and a JSON header
        raw = p.read_bytes()
        header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
        assert "__metadata__" in header
    assert not list((tmp_path / "ds").glob("*.pkl"))
    meta = json.loads((tmp_path / "ds" / "metadata.json").read_text())
    assert meta["num_samples"] == 5 and meta["num_shards"] == 3
    loaded = load_shards(tmp_path / "ds")
    assert len(loaded) == 5
    for a, b in zip(records, loaded):
        assert torch.equal(a["latent"]["samples"], b["latent"]["samples"])
        assert torch.equal(a["conditioning"][0][0], b["conditioning"][0][0])
        assert torch.equal(a["conditioning"][0][1]["pooled_output"], b["conditioning"][0][1]["pooled_output"])
        assert a["conditioning"][0][1]["guidance"] == b["conditioning"][0][1]["guidance"]


def test_resolution_shift_matches_comfyui_model_sampling():
    # independent reference: the ModelSamplingFlux node's mu for width x height pixels
    for w, h in ((512, 512), (1024, 1024), (1360, 768)):
        ref = FlowModelSampling.flux_for_resolution(w, h)
        assert resolution_mu(h // 8, w // 8) == pytest.approx(ref.shift, abs=1e-9)
        t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
        assert torch.allclose(time_shift(t, math.exp(ref.shift)), ref.sigma(t), atol=1e-12)


def test_lr_schedule_warmup_and_cosine():
    kw = dict(base_lr=1.0, total_steps=12, warmup_steps=2, min_lr_ratio=0.1)
    assert [lr_at(s, schedule="cosine", **kw) for s in (0, 1)] == [0.5, 1.0]
    assert lr_at(2, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_at(7, schedule="cosine", **kw) == pytest.approx(0.55)
    assert lr_at(12, schedule="cosine", **kw) == pytest.approx(0.1)
    assert lr_at(7, schedule="linear", **kw) == pytest.approx(0.55)
    assert lr_at(9, schedule="constant", **kw) == 1.0


@pytest.mark.parametrize("algorithm", ["LoRA", "LoHa", "LoKr"])
def test_hooked_adapter_equals_merged_weight_float64(algorithm):
    layer = torch.nn.Linear(12, 20).double().requires_grad_(False)
    model = torch.nn.Module()
    model.double_blocks = torch.nn.ModuleList([torch.nn.Module()])
    model.double_blocks[0].img_attn = torch.nn.Module()
    model.double_blocks[0].img_attn.qkv = layer
    ad = adapters.create(
        model, algorithm=algorithm, rank=2, alpha=3.0, targets="attention", dtype=torch.float64
    )
    with torch.no_grad():
        for p in ad.parameters():
            p.copy_(torch.randn(p.shape, dtype=torch.float64))
    sd = adapters.lora_state_dict(ad)
    pre = "diffusion_model.double_blocks.0.img_attn.qkv"
    alpha = float(sd[f"{pre}.alpha"])
    # the file formulas (flux-formats §7.1, §7.5), written out independently
    if algorithm == "LoRA":
        down, up = sd[f"{pre}.lora_down.weight"], sd[f"{pre}.lora_up.weight"]
        dw = alpha / down.shape[0] * up @ down
    elif algorithm == "LoHa":
        w1 = sd[f"{pre}.hada_w1_a"] @ sd[f"{pre}.hada_w1_b"]
        w2 = sd[f"{pre}.hada_w2_a"] @ sd[f"{pre}.hada_w2_b"]
        dw = alpha / sd[f"{pre}.hada_w1_b"].shape[0] * w1 * w2
    else:
        w2 = sd[f"{pre}.lokr_w2_a"] @ sd[f"{pre}.lokr_w2_b"]
        dw = alpha / sd[f"{pre}.lokr_w2_b"].shape[0] * torch.kron(sd[f"{pre}.lokr_w1"], w2)
    x = torch.randn(3, 12, dtype=torch.float64)
    ad.hook_into(model)
    hooked = layer(x)
    ad.detach()
    assert torch.allclose(hooked, F.linear(x, layer.weight + dw, layer.bias), atol=1e-10)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


def test_masked_loss_ignores_the_masked_out_region():
    x0, noise = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    v = torch.zeros(1, 2, 4, 4)
    v[..., :, 2:] = 5.0  # wrong only on the right half
    t = torch.tensor([0.5])
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :, :2] = 1.0
    assert flow_loss(v, x0, noise, t, mask=mask).item() == 0.0
    assert flow_loss(v, x0, noise, t).item() == pytest.approx(12.5)


def test_gradient_checkpointing_gives_the_same_lora(model, data):
    cfg = TrainConfig(steps=2, batch_size=2, learning_rate=1e-2, rank=2)
    plain = train(model, data, cfg).lora
    ckpt = train(model, data, cfg.replace(gradient_checkpointing=True)).lora
    assert plain.keys() == ckpt.keys()
    assert all(torch.allclose(plain[k], ckpt[k], atol=1e-6) for k in plain)


def test_training_on_an_fp8_base_leaves_its_weights_untouched(demo_models_dir, data):
    from models.formats.load import load_flux_transformer

    model = load_flux_transformer(demo_models_dir / "diffusion_models" / "flux1-dev-fp8.safetensors")
    qkv = model.double_blocks[0].img_attn.qkv
    assert qkv.weight.dtype == torch.float8_e4m3fn
    before = snapshot(model)
    result = train(model, data, TrainConfig(steps=2, learning_rate=1e-2, rank=2))
    assert_untouched(model, before)
    up = result.lora["diffusion_model.double_blocks.0.img_attn.qkv.lora_up.weight"]
    assert up.abs().max() > 0 and torch.isfinite(up).all()


def test_adapters_hook_into_a_second_base_and_detach_from_it_alone():
    train_base, inference_base = tiny_flux(seed=0), tiny_flux(seed=1)
    ad = adapters.create(train_base, rank=2, seed=3)
    with torch.no_grad():
        for p in ad.parameters():
            p.add_(0.1)
    layer_a, layer_b = train_base.single_blocks[0].linear2, inference_base.single_blocks[0].linear2
    x = torch.randn(2, layer_a.in_features)
    plain_a, plain_b = layer_a(x), layer_b(x)
    ad.hook_into(train_base)
    ad.hook_into(inference_base)
    assert not torch.allclose(layer_b(x), plain_b)
    ad.detach_from(inference_base)
    assert torch.equal(layer_b(x), plain_b) and not torch.allclose(layer_a(x), plain_a)
    ad.detach()
    assert torch.equal(layer_a(x), plain_a)


def test_diffusers_export_loads_in_diffusers_and_matches_the_hooked_model(model, data):
    from diffusers import FluxTransformer2DModel

    from models.flux.packing import make_image_ids, make_text_ids, pack_latents, unpack_latents
    from models.formats.diffusers_flux import bfl_to_diffusers_transformer
    from models.training.export import to_key_style

    result = train(model, data, TrainConfig(steps=2, learning_rate=5e-2, rank=2, alpha=3.0))
    peft_sd = to_key_style(result.lora, "diffusers")
    assert all(
        k.startswith("transformer.") and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in peft_sd
    )
    p = model.params
    with torch.device("meta"):
        twin = FluxTransformer2DModel(
            patch_size=1, in_channels=p.in_channels, out_channels=p.out_channels, num_layers=p.depth,
            num_single_layers=p.depth_single_blocks, attention_head_dim=p.head_dim, num_attention_heads=p.num_heads,
            joint_attention_dim=p.context_in_dim, pooled_projection_dim=p.vec_in_dim,
            guidance_embeds=p.guidance_embed, axes_dims_rope=p.axes_dim,
        )  # fmt: skip
    twin.load_state_dict(bfl_to_diffusers_transformer(model.state_dict()), strict=True, assign=True)
    twin.eval()
    twin.load_lora_adapter(peft_sd, prefix="transformer", adapter_name="trained")
    sample = data.samples[0]
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    t, ctx, pooled = torch.tensor([0.6]), sample.context[None], sample.pooled[None]
    with torch.no_grad():
        theirs = twin(hidden_states=pack_latents(x), encoder_hidden_states=ctx, pooled_projections=pooled, timestep=t,
                      img_ids=make_image_ids(1, 4, 4)[0], txt_ids=make_text_ids(1, ctx.shape[1])[0],
                      guidance=torch.ones(1), return_dict=False)[0]  # fmt: skip
        result.adapters.hook_into(model)
        try:
            from models.flux.apply import flux_forward_latent

            ours = flux_forward_latent(model, x, t, ctx, pooled, torch.ones(1))
        finally:
            result.adapters.detach()
        plain = flux_forward_latent(model, x, t, ctx, pooled, torch.ones(1))
    theirs = unpack_latents(theirs, 8, 8)
    assert (ours - plain).abs().max() > 1e-3  # the LoRA does something
    assert torch.allclose(theirs, ours, atol=1e-4), (theirs - ours).abs().max()
