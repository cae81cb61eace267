"""Seeded noise: ComfyUI's prepare_noise numbers, batch_index handling, SDE noise samplers, RNG isolation."""

from __future__ import annotations

import pytest
import torch

from models.sampling import SamplingError, make_noise_sampler, prepare_noise
from models.sampling.brownian import brownian_noise_sampler


def randn(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", [0, 42, 2**32 + 7, 2**64 - 1])
def test_prepare_noise_is_comfyui_manual_seed_randn(seed: int) -> None:
    latent = torch.zeros(2, 16, 6, 5)
    noise = prepare_noise(latent, seed)
    assert noise.shape == latent.shape and noise.dtype == torch.float32 and noise.device.type == "cpu"
    assert torch.equal(noise, randn(tuple(latent.shape), seed))


def test_prepare_noise_leaves_global_rng_alone() -> None:
    saved = torch.get_rng_state()
    try:
        torch.manual_seed(1234)
        state = torch.get_rng_state()
        prepare_noise(torch.zeros(1, 16, 8, 8), 7)
        make_noise_sampler(torch.zeros(1, 16, 8, 8), 7)(torch.tensor(1.0), torch.tensor(0.5))
        assert torch.equal(torch.get_rng_state(), state)
        # ...and it equals what ComfyUI gets from torch.manual_seed(seed) on the global generator.
        torch.manual_seed(7)
        assert torch.equal(torch.randn(1, 16, 8, 8), prepare_noise(torch.zeros(1, 16, 8, 8), 7))
    finally:
        torch.set_rng_state(saved)


def test_prepare_noise_follows_latent_dtype() -> None:
    noise = prepare_noise(torch.zeros(1, 16, 4, 4, dtype=torch.float64), 3)
    assert noise.dtype == torch.float64
    assert prepare_noise(torch.zeros(1, 16, 4, 4, dtype=torch.int64), 3).dtype == torch.float32


def test_batch_index_draws_per_sample_up_to_the_largest_index() -> None:
    latent = torch.zeros(3, 16, 4, 4)
    gen = torch.Generator().manual_seed(9)
    draws = [torch.randn(1, 16, 4, 4, generator=gen) for _ in range(4)]  # indices 0..3
    noise = prepare_noise(latent, 9, batch_index=[3, 1, 3])
    assert torch.equal(noise, torch.cat([draws[3], draws[1], draws[3]]))
    # A latent cut from a batch keeps its noise: index i gets the i-th per-sample draw.
    assert torch.equal(prepare_noise(latent[:1], 9, batch_index=torch.tensor([2])), draws[2])


def test_bad_noise_inputs() -> None:
    with pytest.raises(SamplingError, match="64-bit"):
        prepare_noise(torch.zeros(1, 1, 2, 2), 2**64)
    with pytest.raises(SamplingError, match="batch_index"):
        prepare_noise(torch.zeros(1, 1, 2, 2), 0, batch_index=[-1])


def test_noise_sampler_is_seed_plus_one_stream() -> None:
    x = torch.zeros(2, 16, 4, 4)
    sampler = make_noise_sampler(x, 5)
    gen = torch.Generator().manual_seed(6)  # ComfyUI's default_noise_sampler: seed + 1 on CPU
    sigma, sigma_next = torch.tensor(0.8), torch.tensor(0.6)
    for _ in range(3):
        assert torch.equal(sampler(sigma, sigma_next), torch.randn(x.shape, generator=gen))
    again = make_noise_sampler(x, 5)
    assert torch.equal(again(sigma, sigma_next), randn(tuple(x.shape), 6))
    # the largest seed wraps instead of overflowing
    assert torch.equal(make_noise_sampler(x, 2**64 - 1)(sigma, sigma_next), randn(tuple(x.shape), 0))


def test_unseeded_noise_sampler_is_standard_normal() -> None:
    noise = make_noise_sampler(torch.zeros(64, 64, dtype=torch.float64), None)(
        torch.tensor(1.0), torch.tensor(0.0)
    )
    assert noise.dtype == torch.float64
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1) < 0.05


def test_brownian_noise_matches_comfyui_tree() -> None:
    torchsde = pytest.importorskip("torchsde")
    x = torch.zeros(2, 3, 4, 4)
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.2, 0.0])
    sampler = brownian_noise_sampler(x, sigmas, 42)
    # ComfyUI: BrownianTree(t0=min positive sigma, w0=0, t1=max sigma, entropy=seed), queried sorted
    tree = torchsde.BrownianTree(torch.tensor(0.2), torch.zeros_like(x), torch.tensor(1.0), entropy=42)
    a, b = sigmas[0], sigmas[1]
    torch.testing.assert_close(sampler(a, b), -tree(b, a) / (a - b).sqrt())


def test_brownian_increments_add_up() -> None:
    x = torch.zeros(1, 4, 32, 32, dtype=torch.float64)
    sigmas = torch.tensor([1.0, 0.6, 0.3, 0.0], dtype=torch.float64)
    sampler = brownian_noise_sampler(x, sigmas, 7)
    a, m, b = (torch.tensor(v, dtype=torch.float64) for v in (0.9, 0.6, 0.35))
    whole = sampler(a, b) * (a - b).sqrt()
    parts = sampler(a, m) * (a - m).sqrt() + sampler(m, b) * (m - b).sqrt()
    torch.testing.assert_close(whole, parts, atol=1e-5, rtol=0)  # W is one path: increments add
    assert abs(sampler(a, b).std().item() - 1) < 0.05  # scaled to unit variance
    assert torch.equal(brownian_noise_sampler(x, sigmas, 7)(a, b), sampler(a, b))
    assert not torch.equal(brownian_noise_sampler(x, sigmas, 8)(a, b), sampler(a, b))
