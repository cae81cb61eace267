"""FLUX latent and VAE nodes through the executor: empty latents, noise masks, upscaling (bislerp
against a float64 reference), Kontext image scaling, and VAE encode/decode and VAE-based inpaint
conditioning on a tiny autoencoder against diffusers' AutoencoderKL.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.flux_node_helpers import cond, run_node

# --- latents ------------------------------------------------------------------------------------


@pytest.mark.parametrize("node", ["EmptyLatentImage", "EmptySD3LatentImage"])
def test_empty_latents_are_flux_shaped_zeros(node):
    (out,) = run_node(node, {"width": 80, "height": 48, "batch_size": 3})
    assert out["samples"].shape == (3, 16, 6, 10) and out["samples"].dtype == torch.float32
    assert torch.count_nonzero(out["samples"]) == 0


def test_set_latent_noise_mask_reshapes_and_copies():
    samples = {"samples": torch.randn(2, 16, 4, 4), "batch_index": [3, 4]}
    mask = torch.rand(2, 32, 32)
    (out,) = run_node("SetLatentNoiseMask", {}, {"samples": samples, "mask": mask})
    assert out["noise_mask"].shape == (2, 1, 32, 32) and torch.equal(out["noise_mask"][:, 0], mask)
    assert out["batch_index"] == [3, 4] and "noise_mask" not in samples


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic"])
def test_latent_upscale_matches_interpolate(method):
    x = torch.randn(1, 16, 12, 20)
    (out,) = run_node(
        "LatentUpscale",
        {"upscale_method": method, "width": 256, "height": 0, "crop": "disabled"},
        {"samples": {"samples": x}},
    )
    # height 0 keeps the aspect ratio: 256 px wide -> 32 latent columns, round(12 * 256 / 20) = 154 px -> 19 rows
    assert out["samples"].shape == (1, 16, 19, 32)
    torch.testing.assert_close(out["samples"], F.interpolate(x, size=(19, 32), mode=method))
    (by,) = run_node(
        "LatentUpscaleBy", {"upscale_method": method, "scale_by": 1.5}, {"samples": {"samples": x}}
    )
    torch.testing.assert_close(by["samples"], F.interpolate(x, size=(18, 30), mode=method))


def test_latent_upscale_center_crop():
    x = torch.arange(2 * 8 * 16, dtype=torch.float32).reshape(1, 2, 8, 16)
    (out,) = run_node(
        "LatentUpscale",
        {"upscale_method": "nearest-exact", "width": 64, "height": 64, "crop": "center"},
        {"samples": {"samples": x}},
    )
    # 16x8 cropped to the 1:1 center 8x8 (columns 4..11), then resized to 8x8: identical
    torch.testing.assert_close(out["samples"], x[:, :, :, 4:12])


def _slerp64(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    ua, ub = a / na, b / nb
    dot = float(np.clip(ua @ ub, -1, 1))
    if dot > 1 - 1e-5:
        return a
    omega = math.acos(dot)
    direction = (math.sin((1 - t) * omega) * ua + math.sin(t * omega) * ub) / math.sin(omega)
    return direction * (na * (1 - t) + nb * t)


def _bilinear_source(old: int, new: int, i: int) -> tuple[int, int, float]:
    """align_corners=False source coordinate of output i, clamped to the input like interpolate does."""
    pos = min(max((i + 0.5) * old / new - 0.5, 0.0), old - 1)
    left = math.floor(pos)
    return left, min(left + 1, old - 1), pos - left


def test_bislerp_against_float64_reference():
    x = torch.randn(1, 3, 3, 4, generator=torch.Generator().manual_seed(0))
    (out,) = run_node(
        "LatentUpscaleBy", {"upscale_method": "bislerp", "scale_by": 1.75}, {"samples": {"samples": x}}
    )  # 3x4 -> round(5.25) x 7
    src = x[0].double().permute(1, 2, 0).numpy()  # [H, W, C]
    width_pass = np.zeros((3, 7, 3))
    for r in range(3):
        for i in range(7):
            left, right, t = _bilinear_source(4, 7, i)
            width_pass[r, i] = _slerp64(src[r, left], src[r, right], t)
    expect = np.zeros((5, 7, 3))
    for j in range(5):
        top, bottom, t = _bilinear_source(3, 5, j)
        for i in range(7):
            expect[j, i] = _slerp64(width_pass[top, i], width_pass[bottom, i], t)
    np.testing.assert_allclose(out["samples"][0].permute(1, 2, 0).numpy(), expect, atol=1e-5)


def test_kontext_image_scale_picks_nearest_aspect_and_lanczos():
    image = torch.rand(1, 60, 100, 3, generator=torch.Generator().manual_seed(1))
    (out,) = run_node("FluxKontextImageScale", {}, {"image": image})
    # 100:60 = 1.667 is closest to 1328:800 = 1.660
    assert out.shape == (1, 800, 1328, 3)
    # center crop to 1.660 would drop round((100 - 99.6) / 2) = 0 columns: a plain resize
    pil = Image.fromarray((image[0].numpy() * 255).clip(0, 255).astype(np.uint8))
    expect = np.asarray(pil.resize((1328, 800), Image.Resampling.LANCZOS), dtype=np.float32) / 255
    np.testing.assert_allclose(out[0].numpy(), expect, atol=1e-6)


# --- VAE nodes on a tiny autoencoder, against diffusers' AutoencoderKL --------------------------


@pytest.fixture(scope="module")
def tiny_vae():
    """Our tiny AutoEncoder in a VaeHandle and the same weights in a diffusers AutoencoderKL."""
    from diffusers import AutoencoderKL

    from models.flux.autoencoder import AutoEncoder, AutoEncoderParams
    from models.formats.diffusers_vae import bfl_to_diffusers_vae
    from models.patches import VaeHandle

    params = AutoEncoderParams(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1)
    torch.manual_seed(3)
    ae = AutoEncoder(params).eval()
    ref = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    ).eval()
    ref.load_state_dict(bfl_to_diffusers_vae(ae.state_dict()))
    return VaeHandle(module=ae, params=params), ref


def test_vae_encode_decode_follow_comfyui_latent_convention(tiny_vae):
    vae, ref = tiny_vae
    image = torch.rand(2, 36, 44, 3, generator=torch.Generator().manual_seed(4))
    (encoded,) = run_node("VAEEncode", {}, {"pixels": image, "vae": vae})
    cropped = image[:, 2:34, 2:42]  # center crop to multiples of 8
    with torch.no_grad():
        mean = ref.encode(cropped.movedim(-1, 1) * 2 - 1).latent_dist.mean
        pixels = ((ref.decode(mean).sample + 1) / 2).clamp(0, 1).movedim(1, -1)
    # LATENT holds the un-scaled mean, like ComfyUI
    torch.testing.assert_close(encoded["samples"], mean, atol=2e-5, rtol=1e-4)
    (decoded,) = run_node("VAEDecode", {}, {"samples": {"samples": mean}, "vae": vae})
    assert decoded.shape == (2, 32, 40, 3)
    torch.testing.assert_close(decoded, pixels, atol=2e-5, rtol=1e-4)
    # one tile covering everything is the plain path; several tiles keep shapes and stay close
    (tiled,) = run_node(
        "VAEEncodeTiled",
        {"tile_size": 64, "overlap": 0, "temporal_size": 64, "temporal_overlap": 8},
        {"pixels": cropped, "vae": vae},
    )
    torch.testing.assert_close(tiled["samples"], encoded["samples"], atol=1e-6, rtol=1e-6)
    big = torch.rand(1, 16, 10, 10, generator=torch.Generator().manual_seed(8))
    (plain,) = run_node("VAEDecode", {}, {"samples": {"samples": big}, "vae": vae})
    (tiles,) = run_node(
        "VAEDecodeTiled",
        {"tile_size": 64, "overlap": 16, "temporal_size": 64, "temporal_overlap": 8},
        {"samples": {"samples": big}, "vae": vae},
    )
    assert tiles.shape == plain.shape == (1, 80, 80, 3) and torch.isfinite(tiles).all()


def test_instruct_pix2pix_and_inpaint_conditioning(tiny_vae):
    vae, ref = tiny_vae
    image = torch.rand(1, 32, 40, 3, generator=torch.Generator().manual_seed(9))
    mask = torch.zeros(1, 32, 40)
    mask[:, 8:20, 16:32] = 1.0
    positive, negative = cond(guidance=30.0), cond(3)

    def ref_mean(pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return ref.encode(pixels.movedim(-1, 1) * 2 - 1).latent_dist.mean

    pos, neg, lat = run_node(
        "InstructPixToPixConditioning",
        {},
        {"positive": positive, "negative": negative, "vae": vae, "pixels": image},
        outputs=3,
    )
    for out in (pos, neg):
        torch.testing.assert_close(out[0][1]["concat_latent_image"], ref_mean(image), atol=2e-5, rtol=1e-4)
    assert pos[0][1]["guidance"] == 30.0 and "concat_latent_image" not in positive[0][1]
    assert torch.count_nonzero(lat["samples"]) == 0 and lat["samples"].shape == (1, 16, 4, 5)

    pos, neg, lat = run_node(
        "InpaintModelConditioning",
        {"noise_mask": True},
        {"positive": positive, "negative": negative, "vae": vae, "pixels": image, "mask": mask},
        outputs=3,
    )
    greyed = image.clone()
    greyed[:, 8:20, 16:32] = 0.5  # the area to paint is mid-grey for the Fill model
    torch.testing.assert_close(pos[0][1]["concat_latent_image"], ref_mean(greyed), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(neg[0][1]["concat_mask"], mask[:, None])
    torch.testing.assert_close(lat["samples"], ref_mean(image), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(lat["noise_mask"], mask[:, None])
    (_, _, plain) = run_node(
        "InpaintModelConditioning",
        {"noise_mask": False},
        {"positive": positive, "negative": negative, "vae": vae, "pixels": image, "mask": mask},
        outputs=3,
    )
    assert "noise_mask" not in plain
