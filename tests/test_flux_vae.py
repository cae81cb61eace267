"""FLUX autoencoder: parity with diffusers' AutoencoderKL, detection, meta loading, tiled coding."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from models.flux.autoencoder import (
    FLUX_AE,
    AutoEncoder,
    AutoEncoderParams,
    AutoEncoderParamsError,
    detect_autoencoder_params,
)
from models.flux.tiling import decode_tiled, encode_tiled, tile_starts
from models.formats.diffusers_vae import diffusers_to_bfl_vae

from .test_diffusers_convert import TINY_AE, tiny_diffusers_vae


def _pair(seed: int = 0):
    theirs = tiny_diffusers_vae(TINY_AE, seed)
    ours = AutoEncoder(TINY_AE).eval()
    ours.load_state_dict(diffusers_to_bfl_vae(theirs.state_dict()), strict=True)
    return theirs, ours


def _pixels(h: int = 32, w: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, h, w, generator=g) * 2 - 1


@torch.no_grad()
def test_encode_matches_diffusers_mean_scaled_and_shifted():
    theirs, ours = _pair()
    x = _pixels()
    ref = (theirs.encode(x).latent_dist.mean - TINY_AE.shift_factor) * TINY_AE.scale_factor
    err = (ours.encode(x) - ref).abs().max().item()
    assert err <= 1e-5, f"encode max |ours - diffusers| = {err:.2e}"  # measured 6.9e-7 (latents ~0.9)
    assert ref.abs().max() > 0.3


@torch.no_grad()
def test_decode_matches_diffusers():
    theirs, ours = _pair()
    z = torch.randn(2, 16, 4, 6, generator=torch.Generator().manual_seed(1))
    ref = theirs.decode(z / TINY_AE.scale_factor + TINY_AE.shift_factor).sample
    err = (ours.decode(z) - ref).abs().max().item()
    assert err <= 1e-5, f"decode max |ours - diffusers| = {err:.2e}"  # measured 4.2e-6 (outputs ~3.6)
    assert ours.decode(z).shape == (2, 3, 32, 48)


@torch.no_grad()
def test_meta_construction_and_assign_loading():
    _, ours = _pair()
    with torch.device("meta"):
        lazy = AutoEncoder(TINY_AE)
    lazy.load_state_dict(ours.state_dict(), assign=True)
    assert not any(p.is_meta for p in lazy.parameters())
    x = _pixels(16, 16)
    assert torch.equal(lazy.eval().encode(x), ours.encode(x))


@pytest.mark.parametrize("prefix", ["", "vae."])
def test_detects_flux_ae_and_tiny_configs(prefix):
    with torch.device("meta"):
        sd = AutoEncoder(FLUX_AE).state_dict()
    assert len(sd) == 244
    assert detect_autoencoder_params({prefix + k: tuple(v.shape) for k, v in sd.items()}) == FLUX_AE
    assert detect_autoencoder_params(AutoEncoder(TINY_AE).state_dict()) == TINY_AE
    assert FLUX_AE.downscale == 8


def test_detection_rejects_other_vaes():
    sd = {k: tuple(v.shape) for k, v in AutoEncoder(TINY_AE).state_dict().items()}
    with pytest.raises(AutoEncoderParamsError, match="quant_conv"):
        detect_autoencoder_params({**sd, "quant_conv.weight": (8, 8, 1, 1)})
    with pytest.raises(AutoEncoderParamsError, match="decoder.conv_in.weight is missing"):
        detect_autoencoder_params({k: v for k, v in sd.items() if k != "decoder.conv_in.weight"})
    with pytest.raises(ValueError, match="multiples of 32"):
        AutoEncoderParams(ch=48)


class LocalCoder:
    """Stand-in autoencoder with a local receptive field (1 output pixel of radius), 8x scale."""

    params = SimpleNamespace(downscale=8)

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(7)
        self.w_dec = torch.randn(3, 16, 3, 3, generator=g) * 0.1
        self.w_enc = torch.randn(16, 3, 1, 1, generator=g)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(F.conv2d(F.interpolate(z, scale_factor=8.0, mode="nearest"), self.w_dec, padding=1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(F.conv2d(F.avg_pool2d(x, 8), self.w_enc))


def _seam_mask(size: int, tile: int, overlap: int, scale: int, radius: int) -> torch.Tensor:
    """True where an output pixel is more than `radius` from every tile edge inside the image."""
    keep = torch.ones(size * scale, dtype=torch.bool)
    for start in tile_starts(size, tile, overlap):
        for edge in (start * scale, (start + tile) * scale):
            if 0 < edge < size * scale:
                keep[max(0, edge - radius) : edge + radius] = False
    return keep


def test_tiled_decode_matches_untiled_away_from_seams():
    coder = LocalCoder()
    z = torch.randn(1, 16, 20, 28, generator=torch.Generator().manual_seed(3))
    full = coder.decode(z)
    tiled = decode_tiled(coder, z, tile=64, overlap=16)  # 8-latent tiles, 2-latent overlap
    assert tiled.shape == full.shape
    keep = _seam_mask(20, 8, 2, 8, 1)[:, None] & _seam_mask(28, 8, 2, 8, 1)[None, :]
    assert (tiled - full)[..., keep].abs().max() <= 1e-6
    assert (tiled - full).abs().max() > 1e-4  # the seams themselves do differ: the test sees tiles
    # blending keeps seam pixels between the neighbours' values, far closer than a misplaced tile
    assert (tiled - full).abs().mean() < 0.02 * full.abs().mean()


def test_tiled_encode_matches_untiled_for_a_pointwise_coder():
    coder = LocalCoder()
    x = _pixels(72, 104, seed=4)
    tiled = encode_tiled(coder, x, tile=32, overlap=8)
    assert torch.allclose(tiled, coder.encode(x), atol=1e-6)


@torch.no_grad()
def test_tiled_real_autoencoder():
    _, ours = _pair()
    z = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(5))
    full = ours.decode(z)
    # a tile covering everything is one-piece decoding
    assert torch.equal(decode_tiled(ours, z, tile=128, overlap=32), full)
    tiled = decode_tiled(ours, z, tile=48, overlap=16)  # 2 x 3 tiles
    assert tiled.shape == full.shape
    # GroupNorm statistics and attention are per tile, so tiles differ from one piece (random weights
    # exaggerate it): measured mean |diff| 0.32 of the mean |signal|, while the same image shifted by
    # 16 px differs by 1.43: the tiles sit where they belong
    err = (tiled - full).abs().mean()
    assert err < 0.5 * (torch.roll(full, 16, dims=-1) - full).abs().mean()
    x = _pixels(48, 64)
    assert encode_tiled(ours, x, tile=32, overlap=16).shape == ours.encode(x).shape
    with pytest.raises(ValueError, match="divisible by 8"):
        encode_tiled(ours, _pixels(36, 64), tile=32, overlap=16)
    with pytest.raises(ValueError, match="overlap"):
        decode_tiled(ours, z, tile=64, overlap=64)
