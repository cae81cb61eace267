"""sample() on the analytic flow problem (tests/analytic_flow.py): img2img, inpainting masks,
differential diffusion, noise seeding, sampler options, and CFG.
"""

from __future__ import annotations

import pytest
import torch

from models.sampling import (
    SAMPLERS,
    FlowModelSampling,
    SamplingError,
    batch_tensor_conds,
    cfg_combine,
    cfg_denoiser,
    differential_diffusion,
    make_noise_sampler,
    masked_denoiser,
    prepare_denoise_mask,
    sample,
)
from models.sampling.brownian import brownian_noise_sampler
from tests.analytic_flow import gaussian_denoiser

# --- sample(): img2img, masks, noise, CFG -------------------------------------------------------

FLUX = FlowModelSampling.flux_default()


def latent_and_noise(batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(batch, 16, 8, 8, generator=g), torch.randn(batch, 16, 8, 8, generator=g)


def test_denoise_zero_returns_the_input_latent() -> None:
    latent, noise = latent_and_noise()
    out = sample(
        gaussian_denoiser,
        noise=noise,
        latent_image=latent,
        sigmas=torch.zeros(0),
        sampler="euler",
        model_sampling=FLUX,
    )
    assert out is latent


@pytest.mark.parametrize("add_noise", [True, False])
def test_img2img_starts_from_the_noised_latent(add_noise: bool) -> None:
    latent, noise = latent_and_noise()
    seen: list[torch.Tensor] = []

    def recording(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return gaussian_denoiser(x, sigma)

    sigmas = torch.tensor([0.6, 0.3, 0.0])
    sample(
        recording,
        noise=noise,
        latent_image=latent,
        sigmas=sigmas,
        sampler="euler",
        model_sampling=FLUX,
        add_noise=add_noise,
    )
    start = 0.6 * noise + 0.4 * latent if add_noise else 0.4 * latent
    torch.testing.assert_close(seen[0], start)


def test_partial_schedule_divides_by_one_minus_last_sigma() -> None:
    latent, noise = latent_and_noise()
    c = torch.full_like(latent, 0.25)
    out = sample(
        lambda x, s: c,
        noise=noise,
        latent_image=latent,
        sigmas=torch.tensor([1.0, 0.5]),
        sampler="euler",
        model_sampling=FLUX,
    )
    # one Euler step from noise to sigma 0.5 gives (noise + c) / 2, then / (1 - 0.5)
    torch.testing.assert_close(out, noise + c)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "euler_ancestral", "dpmpp_sde"])
def test_inpainting_keeps_the_unmasked_region(sampler: str) -> None:
    latent, noise = latent_and_noise(2)
    pixel_mask = torch.zeros(1, 1, 64, 64)
    pixel_mask[..., 32:] = 1.0  # regenerate the right half only
    out = sample(
        gaussian_denoiser,
        noise=noise,
        latent_image=latent,
        sigmas=torch.linspace(1, 0, 11),
        sampler=sampler,
        model_sampling=FLUX,
        denoise_mask=pixel_mask,
        noise_seed=1,
    )
    torch.testing.assert_close(out[..., :4], latent[..., :4], atol=1e-5, rtol=0)
    assert (out[..., 4:] - latent[..., 4:]).abs().mean() > 0.1


def test_differential_diffusion_threshold() -> None:
    ms = FlowModelSampling.schnell()
    sigmas = torch.tensor([0.8, 0.5, 0.2, 0.0])
    mask = torch.linspace(0, 1, 11).reshape(1, 1, 1, 11)
    at = 0.5
    threshold = (at - ms.sigma_min) / (0.8 - ms.sigma_min)  # model time falls from sigmas[0] to sigma_min
    binary = differential_diffusion(sigmas, ms)(torch.tensor([at]), mask)
    torch.testing.assert_close(binary, (mask >= threshold).float())
    blended = differential_diffusion(sigmas, ms, strength=0.25)(torch.tensor([at]), mask)
    torch.testing.assert_close(blended, 0.25 * (mask >= threshold).float() + 0.75 * mask)
    latent, noise = latent_and_noise()
    out = sample(
        gaussian_denoiser,
        noise=noise,
        latent_image=latent,
        sigmas=sigmas,
        sampler="euler",
        model_sampling=ms,
        denoise_mask=torch.zeros(8, 8),
        differential_diffusion=1.0,
    )
    torch.testing.assert_close(out, latent, atol=1e-5, rtol=0)


def test_prepare_denoise_mask() -> None:
    mask = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    out = prepare_denoise_mask(mask, (4, 3, 8, 8))
    # bilinear at exactly half size samples between pixel centres: the mean of each 2x2 block
    blocks = mask.reshape(2, 8, 2, 8, 2).mean(dim=(2, 4))
    assert out.shape == (4, 3, 8, 8)
    torch.testing.assert_close(out[:2, 1], blocks)
    torch.testing.assert_close(out[2:], out[:2])  # batch repeated
    with pytest.raises(SamplingError):
        prepare_denoise_mask(mask, (1, 16, 8))


def test_ddim_is_euler_with_its_own_inpaint_noise() -> None:
    def mixing(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # sees the kept region too
        return gaussian_denoiser(x, sigma) + 0.1 * x.mean(dim=(2, 3), keepdim=True)

    latent, noise = latent_and_noise()
    sigmas = torch.linspace(1, 0, 6)
    kw = {"noise": noise, "latent_image": latent, "sigmas": sigmas, "model_sampling": FLUX, "noise_seed": 4}
    plain = sample(mixing, sampler="ddim", **kw)
    assert torch.equal(plain, sample(mixing, sampler="euler", **kw))
    mask = torch.zeros(8, 8)
    mask[:, 4:] = 1
    got = sample(mixing, sampler="ddim", denoise_mask=mask, **kw)
    kept_noise = torch.randn(noise.shape, generator=torch.Generator().manual_seed(5))
    denoiser = masked_denoiser(
        mixing,
        latent_image=latent,
        noise=kept_noise,
        denoise_mask=prepare_denoise_mask(mask, latent.shape),
        model_sampling=FLUX,
    )
    expected = SAMPLERS["euler"](denoiser, FLUX.noise_scaling(sigmas[0], noise, latent), sigmas)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert not torch.equal(got, sample(mixing, sampler="euler", denoise_mask=mask, **kw))


def test_same_seed_same_result() -> None:
    latent, noise = latent_and_noise()
    kw = {"noise": noise, "latent_image": latent, "sigmas": torch.linspace(1, 0, 6), "model_sampling": FLUX}
    a = sample(gaussian_denoiser, sampler="euler_ancestral", noise_seed=3, **kw)
    b = sample(gaussian_denoiser, sampler="euler_ancestral", noise_seed=3, **kw)
    c = sample(gaussian_denoiser, sampler="euler_ancestral", noise_seed=4, **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m_sde"])
def test_sample_draws_comfyui_noise_for_the_sampler(name: str) -> None:
    latent, noise = latent_and_noise()
    sigmas = torch.linspace(1, 0, 5)
    out = sample(
        gaussian_denoiser,
        noise=noise,
        latent_image=latent,
        sigmas=sigmas,
        sampler=name,
        model_sampling=FLUX,
        noise_seed=9,
    )
    x = FLUX.noise_scaling(sigmas[0], noise, latent)
    # SDE samplers: a Brownian tree seeded with the seed; the others: N(0, 1) from seed + 1
    expected_noise = (
        brownian_noise_sampler(x, sigmas, 9) if name == "dpmpp_2m_sde" else make_noise_sampler(x, 9)
    )
    expected = (
        SAMPLERS[name](gaussian_denoiser, x, sigmas, noise_sampler=expected_noise, model_sampling=FLUX)
        if name == "dpmpp_2m_sde"
        else SAMPLERS[name](gaussian_denoiser, x, sigmas, noise_sampler=expected_noise)
    )
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_sample_passes_options_and_model_sampling() -> None:
    received = {}

    def custom(
        denoiser,
        x,
        sigmas,
        *,
        noise_sampler=None,
        callback=None,
        should_stop=None,
        model_sampling=None,
        eta=1.0,
    ):
        received.update(model_sampling=model_sampling, eta=eta)
        return x

    latent, noise = latent_and_noise()
    sample(
        gaussian_denoiser,
        noise=noise,
        latent_image=latent,
        sigmas=torch.linspace(1, 0, 3),
        sampler=custom,
        model_sampling=FLUX,
        sampler_options={"eta": 0.5},
    )
    assert received == {"model_sampling": FLUX, "eta": 0.5}
    with pytest.raises(SamplingError, match="unknown sampler"):
        sample(
            gaussian_denoiser,
            noise=noise,
            latent_image=latent,
            sigmas=torch.linspace(1, 0, 3),
            sampler="nope",
            model_sampling=FLUX,
        )


def conditional_model(calls: list[int]):
    def model(x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        calls.append(x.shape[0])
        return x * cond["scale"].reshape(-1, 1, 1, 1) + sigma.reshape(-1, 1, 1, 1)

    return model


def test_cfg() -> None:
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.5, 0.5])
    pos, neg = {"scale": torch.tensor([2.0, 2.0])}, {"scale": torch.tensor([-1.0, -1.0])}
    cond_x0, uncond_x0 = 2 * x + 0.5, -x + 0.5
    torch.testing.assert_close(cfg_combine(cond_x0, uncond_x0, 3.5), uncond_x0 + 3.5 * (cond_x0 - uncond_x0))
    calls: list[int] = []
    torch.testing.assert_close(cfg_denoiser(conditional_model(calls), pos, neg, 1.0)(x, sigma), cond_x0)
    assert calls == [2]  # cfg 1: the negative is never evaluated
    calls.clear()
    separate = cfg_denoiser(conditional_model(calls), pos, neg, 3.5)(x, sigma)
    batched = cfg_denoiser(conditional_model(calls), pos, neg, 3.5, batch_conds=batch_tensor_conds)(x, sigma)
    assert calls == [2, 2, 4]
    torch.testing.assert_close(separate, uncond_x0 + 3.5 * (cond_x0 - uncond_x0))
    torch.testing.assert_close(batched, separate)
    assert batch_tensor_conds(pos, {"other": torch.zeros(2)}) is None


def test_sample_builds_cfg_from_positive_and_negative() -> None:
    latent, noise = latent_and_noise()
    pos, neg = {"scale": torch.tensor([0.5])}, {"scale": torch.tensor([0.25])}
    kw = {
        "noise": noise,
        "latent_image": latent,
        "sigmas": torch.tensor([1.0, 0.0]),
        "sampler": "euler",
        "model_sampling": FLUX,
    }
    calls: list[int] = []
    out = sample(conditional_model(calls), positive=pos, negative=neg, cfg=2.0, **kw)
    # one Euler step from sigma 1 to 0 lands on the guided x0 at x = noise
    torch.testing.assert_close(out, (0.25 * noise + 1) + 2.0 * (0.25 * noise))
    assert calls == [1, 1]
