"""Tiny demo checkpoints: deterministic, in every layout, and they load into the modules they came from.

Oracles: the seeded source modules (bit-exact round trips), diffusers' FluxTransformer2DModel and
AutoencoderKL, and transformers' CLIPTextModel / T5EncoderModel loading the diffusers folder.
"""

from __future__ import annotations

import time

import pytest
import torch

from models import formats
from models.flux.packing import make_image_ids, make_text_ids
from models.tiny import (
    DIFFUSERS_NAME,
    TINY_AE,
    TINY_FLUX_CANNY,
    TINY_FLUX_DEV,
    TINY_FLUX_FILL,
    TINY_FLUX_SCHNELL,
    tiny_autoencoder,
    tiny_clip,
    tiny_flux,
    tiny_t5,
    write_demo_models,
)
from models.tiny.demo import SEEDS

EXPECTED_FILES = {
    "diffusion_models/flux1-dev.safetensors",
    "diffusion_models/flux1-dev-fp8.safetensors",
    "diffusion_models/flux1-kontext-dev.safetensors",
    "diffusion_models/flux1-fill-dev.safetensors",
    "diffusion_models/flux1-canny-dev.safetensors",
    "checkpoints/flux1-schnell.safetensors",
    "text_encoders/clip_l.safetensors",
    "text_encoders/t5xxl_fp16.safetensors",
    "text_encoders/t5xxl_fp8_e4m3fn.safetensors",
    "vae/ae.safetensors",
    f"diffusers/{DIFFUSERS_NAME}/model_index.json",
    f"diffusers/{DIFFUSERS_NAME}/transformer/diffusion_pytorch_model.safetensors.index.json",
    f"diffusers/{DIFFUSERS_NAME}/vae/diffusion_pytorch_model.safetensors",
    f"diffusers/{DIFFUSERS_NAME}/text_encoder/model.safetensors",
    f"diffusers/{DIFFUSERS_NAME}/text_encoder_2/model.safetensors.index.json",
    f"diffusers/{DIFFUSERS_NAME}/tokenizer/vocab.json",
    f"diffusers/{DIFFUSERS_NAME}/tokenizer_2/spiece.model",
    "tokenizers/clip_l/merges.txt",
    "tokenizers/t5xxl/spiece.model",
}


def flux_inputs(params, seed: int = 1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(2, 16, params.in_channels, generator=g)
    txt = torch.randn(2, 6, params.context_in_dim, generator=g)
    y = torch.randn(2, params.vec_in_dim, generator=g)
    return dict(
        img=img.to(dtype),
        img_ids=make_image_ids(2, 4, 4),
        txt=txt.to(dtype),
        txt_ids=make_text_ids(2, 6),
        timesteps=torch.tensor([0.3, 0.9]),
        y=y.to(dtype),
        guidance=torch.tensor([3.5, 1.0]),
    )


def test_demo_models_are_complete_small_and_deterministic(demo_models_dir, tmp_path):
    files = {p.relative_to(demo_models_dir).as_posix() for p in demo_models_dir.rglob("*") if p.is_file()}
    assert EXPECTED_FILES <= files
    assert max((demo_models_dir / f).stat().st_size for f in files) < 10 << 20  # a few MB each
    start = time.process_time()
    written = write_demo_models(tmp_path)
    elapsed = time.process_time() - start
    print(f"write_demo_models: {len(written)} files in {elapsed:.1f} s CPU")
    assert elapsed < 60  # a few seconds of CPU; a budget so demo files stay small
    assert {p.relative_to(tmp_path).as_posix() for p in written} == files
    for name in files:  # same seeds -> same bytes
        assert (tmp_path / name).read_bytes() == (demo_models_dir / name).read_bytes(), name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("diffusion_models/flux1-dev.safetensors", [("flux", "bfl", "", None)]),
        ("diffusion_models/flux1-dev-fp8.safetensors", [("flux", "bfl", "", "float8_e4m3fn")]),
        ("text_encoders/clip_l.safetensors", [("clip_l", "hf", "", None)]),
        ("text_encoders/t5xxl_fp8_e4m3fn.safetensors", [("t5xxl", "hf", "", "float8_e4m3fn")]),
        ("vae/ae.safetensors", [("autoencoder", "bfl", "", None)]),
        (
            "checkpoints/flux1-schnell.safetensors",
            [
                ("flux", "bfl", "model.diffusion_model.", None),
                ("autoencoder", "bfl", "vae.", None),
                ("clip_l", "hf", "text_encoders.clip_l.transformer.", None),
                ("t5xxl", "hf", "text_encoders.t5xxl.transformer.", None),
            ],
        ),
        (
            f"diffusers/{DIFFUSERS_NAME}",
            [
                ("flux", "diffusers", "", None),
                ("autoencoder", "diffusers", "", None),
                ("clip_l", "hf", "", None),
                ("t5xxl", "hf", "", None),
            ],
        ),
        (f"diffusers/{DIFFUSERS_NAME}/transformer", [("flux", "diffusers", "", None)]),
        (
            f"diffusers/{DIFFUSERS_NAME}/text_encoder_2/model.safetensors.index.json",
            [("t5xxl", "hf", "", None)],
        ),
    ],
)
def test_each_layout_is_detected(demo_models_dir, name, expected):
    detection = formats.detect_path(demo_models_dir / name)
    assert [(c.family, c.layout, c.prefix, c.fp8) for c in detection.components] == expected


@pytest.mark.parametrize(
    ("name", "params", "seed"),
    [
        ("flux1-dev", TINY_FLUX_DEV, SEEDS["dev"]),
        ("flux1-kontext-dev", TINY_FLUX_DEV, SEEDS["kontext"]),
        ("flux1-fill-dev", TINY_FLUX_FILL, SEEDS["fill"]),
        ("flux1-canny-dev", TINY_FLUX_CANNY, SEEDS["canny"]),
    ],
)
def test_bfl_files_round_trip_bit_exact(demo_models_dir, name, params, seed):
    model = formats.load_flux_transformer(demo_models_dir / "diffusion_models" / f"{name}.safetensors")
    assert model.params == params and model.img_in.weight.shape[1] == params.in_channels
    ref = tiny_flux(params, seed).to(torch.bfloat16)
    inputs = flux_inputs(params, dtype=torch.bfloat16)
    torch.testing.assert_close(model(**inputs), ref(**inputs), rtol=0, atol=0)


def test_all_in_one_checkpoint_parts_match_their_sources(demo_models_dir):
    ck = formats.load_checkpoint(demo_models_dir / "checkpoints" / "flux1-schnell.safetensors")
    assert ck.flux.params == TINY_FLUX_SCHNELL and ck.vae.params == TINY_AE
    ref = tiny_flux(TINY_FLUX_SCHNELL, SEEDS["schnell"]).to(torch.bfloat16)
    inputs = flux_inputs(TINY_FLUX_SCHNELL, dtype=torch.bfloat16)
    torch.testing.assert_close(ck.flux(**inputs), ref(**inputs), rtol=0, atol=0)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    ref_ae = tiny_autoencoder(TINY_AE, SEEDS["schnell_ae"]).to(torch.bfloat16)
    torch.testing.assert_close(ck.vae.encode(x.bfloat16()), ref_ae.encode(x.bfloat16()), rtol=0, atol=0)
    ids = torch.tensor([[766, 5, 9, 767]])
    ref_clip = tiny_clip(seed=SEEDS["schnell_clip"]).half()
    torch.testing.assert_close(
        ck.text_encoders["clip_l"].module(input_ids=ids).pooler_output,
        ref_clip(input_ids=ids).pooler_output,
        rtol=0,
        atol=0,
    )
    ref_t5 = tiny_t5(seed=SEEDS["schnell_t5"]).half()
    t5_ids = torch.tensor([[3, 17, 99, 1]])
    torch.testing.assert_close(
        ck.text_encoders["t5xxl"].module(input_ids=t5_ids).last_hidden_state,
        ref_t5(input_ids=t5_ids).last_hidden_state,
        rtol=0,
        atol=0,
    )


def test_diffusers_transformer_matches_diffusers_itself(demo_models_dir):
    from diffusers import FluxTransformer2DModel

    folder = demo_models_dir / "diffusers" / DIFFUSERS_NAME
    ours = formats.load_flux_transformer(folder, compute_dtype=torch.float32)
    theirs = FluxTransformer2DModel.from_pretrained(folder / "transformer", torch_dtype=torch.float32).eval()
    x = flux_inputs(TINY_FLUX_DEV)
    with torch.no_grad():
        expected = theirs(
            hidden_states=x["img"],
            encoder_hidden_states=x["txt"],
            pooled_projections=x["y"],
            timestep=x["timesteps"],
            img_ids=x["img_ids"][0],
            txt_ids=x["txt_ids"][0],
            guidance=x["guidance"],
            return_dict=False,
        )[0]
        got = ours(**x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_diffusers_vae_and_encoders_match_diffusers_and_transformers(demo_models_dir):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, T5EncoderModel

    folder = demo_models_dir / "diffusers" / DIFFUSERS_NAME
    ae = formats.load_autoencoder(folder)
    ref = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32).eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        mean = ref.encode(x).latent_dist.mean
        torch.testing.assert_close(
            ae.encode(x), (mean - ref.config.shift_factor) * ref.config.scaling_factor, rtol=1e-4, atol=1e-4
        )
        z = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(1))
        decoded = ref.decode(z / ref.config.scaling_factor + ref.config.shift_factor).sample
        torch.testing.assert_close(ae.decode(z), decoded, rtol=1e-4, atol=1e-4)
    ids = torch.tensor([[766, 12, 40, 767, 767]])
    clip = formats.load_text_encoder(folder, "clip_l", compute_dtype=torch.float32).module
    ref_clip = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch.float32).eval()
    t5 = formats.load_text_encoder(folder / "text_encoder_2", compute_dtype=torch.float32).module
    ref_t5 = T5EncoderModel.from_pretrained(folder / "text_encoder_2", torch_dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            clip(input_ids=ids).pooler_output, ref_clip(input_ids=ids).pooler_output, rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(
            t5(input_ids=ids % 400).last_hidden_state,
            ref_t5(input_ids=ids % 400).last_hidden_state,
            rtol=1e-5,
            atol=1e-5,
        )


def test_fp8_files_stay_fp8_and_compute_close_to_the_wide_model(demo_models_dir):
    wide = formats.load_flux_transformer(
        demo_models_dir / "diffusion_models" / "flux1-dev.safetensors", compute_dtype=torch.float32
    )
    narrow = formats.load_flux_transformer(
        demo_models_dir / "diffusion_models" / "flux1-dev-fp8.safetensors", compute_dtype=torch.float32
    )
    assert narrow.single_blocks[0].linear1.weight.dtype == torch.float8_e4m3fn
    assert narrow.single_blocks[0].norm.query_norm.scale.dtype == torch.float32
    x = flux_inputs(TINY_FLUX_DEV)
    a, b = wide(**x), narrow(**x)
    assert b.dtype == torch.float32
    rel = ((a - b).norm() / a.norm()).item()
    assert rel < 0.1, rel  # e4m3 keeps 3 mantissa bits: a few percent of error after 4 blocks
    t5_wide = formats.load_text_encoder(
        demo_models_dir / "text_encoders" / "t5xxl_fp16.safetensors", compute_dtype=torch.float32
    ).module
    t5_fp8 = formats.load_text_encoder(
        demo_models_dir / "text_encoders" / "t5xxl_fp8_e4m3fn.safetensors", compute_dtype=torch.float32
    ).module
    ids = torch.tensor([[3, 17, 99, 1]])
    a, b = t5_wide(input_ids=ids).last_hidden_state, t5_fp8(input_ids=ids).last_hidden_state
    assert ((a - b).norm() / a.norm()).item() < 0.1


def test_a_few_euler_steps_stay_finite_and_varied(demo_models_dir):
    model = formats.load_flux_transformer(
        demo_models_dir / "diffusion_models" / "flux1-dev.safetensors", compute_dtype=torch.float32
    )
    x0 = flux_inputs(TINY_FLUX_DEV)
    x = x0["img"]
    sigmas = torch.linspace(1.0, 0.0, 5)
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        v = model(**{**x0, "img": x, "timesteps": s.expand(2)})
        x = x + (s_next - s) * v
        assert torch.isfinite(x).all()
    assert x.std() > 0.1 and (x[0] - x[1]).abs().mean() > 1e-3  # not collapsed to a constant
