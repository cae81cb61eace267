"""The step contract every sampler keeps (callbacks, interruption, noise), the registry order, and the
latent preview projection.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.sampling import (
    SAMPLER_NAMES,
    SAMPLERS,
    FlowModelSampling,
    Interrupted,
    SamplingError,
    StepInfo,
    make_noise_sampler,
)
from models.sampling.preview import FLUX_LATENT_RGB_BIAS, FLUX_LATENT_RGB_FACTORS, latent_to_rgb
from tests.analytic_flow import gaussian_denoiser

# --- the step contract ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_callback_reports_every_step(name: str) -> None:
    sigmas = FlowModelSampling.schnell().sigma_table()[[999, 700, 400, 200, 50]].tolist() + [0.0]
    sigmas = torch.tensor(sigmas)
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    infos: list[StepInfo] = []
    out = SAMPLERS[name](
        gaussian_denoiser, x, sigmas, noise_sampler=make_noise_sampler(x, 0), callback=infos.append
    )
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
    assert [i.step for i in infos] == list(range(5)) and {i.total_steps for i in infos} == {5}
    for info in infos:
        assert info.denoised.shape == x.shape and info.x.shape == x.shape
        assert info.sigma_next == float(sigmas[info.step + 1])
    # the SDE samplers move a first sigma of 1 to percent_to_sigma(1e-4)
    assert [i.sigma for i in infos[1:]] == sigmas[1:-1].tolist()


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_should_stop_interrupts(name: str) -> None:
    x = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    checks, steps = 0, []

    def should_stop() -> bool:
        nonlocal checks
        checks += 1
        return checks > 2

    with pytest.raises(Interrupted) as caught:
        SAMPLERS[name](
            gaussian_denoiser,
            x,
            torch.linspace(1, 0, 9),
            noise_sampler=make_noise_sampler(x, 0),
            callback=lambda info: steps.append(info.step),
            should_stop=should_stop,
        )
    assert caught.value.step == 2 and caught.value.total_steps == 8 and steps == [0, 1]


def test_stochastic_samplers_need_noise() -> None:
    with pytest.raises(SamplingError, match="noise_sampler"):
        SAMPLERS["euler_ancestral"](gaussian_denoiser, torch.zeros(1, 1, 2, 2), torch.linspace(1, 0, 3))


def test_registry_order_follows_comfyui() -> None:
    comfy_order = [
        "euler",
        "euler_cfg_pp",
        "euler_ancestral",
        "euler_ancestral_cfg_pp",
        "heun",
        "heunpp2",
        "exp_heun_2_x0",
        "exp_heun_2_x0_sde",
        "dpm_2",
        "dpm_2_ancestral",
        "lms",
        "dpm_fast",
        "dpm_adaptive",
        "dpmpp_2s_ancestral",
        "dpmpp_2s_ancestral_cfg_pp",
        "dpmpp_sde",
        "dpmpp_sde_gpu",
        "dpmpp_2m",
        "dpmpp_2m_cfg_pp",
        "dpmpp_2m_sde",
        "dpmpp_2m_sde_gpu",
        "dpmpp_2m_sde_heun",
        "dpmpp_2m_sde_heun_gpu",
        "dpmpp_3m_sde",
        "dpmpp_3m_sde_gpu",
        "ddpm",
        "lcm",
        "ipndm",
        "ipndm_v",
        "deis",
        "cfgpp_ud10_ab",
        "res_multistep",
        "res_multistep_cfg_pp",
        "res_multistep_ancestral",
        "res_multistep_ancestral_cfg_pp",
        "gradient_estimation",
        "gradient_estimation_cfg_pp",
        "er_sde",
        "seeds_2",
        "seeds_3",
        "sa_solver",
        "sa_solver_pece",
        "ddim",
        "uni_pc",
        "uni_pc_bh2",
    ]
    assert list(SAMPLER_NAMES) == [n for n in comfy_order if n in SAMPLERS]


# --- preview ---------------------------------------------------------------------------------


def test_latent_preview_matches_projection() -> None:
    latent = torch.randn(2, 16, 5, 7, generator=torch.Generator().manual_seed(0)) * 4
    rgb = latent_to_rgb(latent)
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 7, 3)
    first = latent[0].double().numpy()
    expected = np.zeros((5, 7, 3))
    for c in range(16):
        for k in range(3):
            expected[..., k] += first[c] * FLUX_LATENT_RGB_FACTORS[c][k]
    expected = np.floor(np.clip((expected + np.array(FLUX_LATENT_RGB_BIAS) + 1) / 2, 0, 1) * 255)
    assert np.abs(rgb.astype(int) - expected).max() <= 1
    assert (rgb == 0).any() and (rgb == 255).any()  # clamped at both ends
    with pytest.raises(ValueError):
        latent_to_rgb(torch.zeros(4, 8, 8))
