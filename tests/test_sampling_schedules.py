"""Flow model sampling and schedulers against float64 reimplementations of ComfyUI's formulas."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from models.sampling import (
    SCHEDULER_NAMES,
    FlowModelSampling,
    SamplingError,
    calculate_sigmas,
    denoise_sigmas,
    ksampler_sigmas,
    slice_sigmas,
)

TOL = 1e-6
FLUX = FlowModelSampling.flux_default()
SCHNELL = FlowModelSampling.schnell()
SD3 = FlowModelSampling.sd3(shift=3.0)


# --- float64 references -------------------------------------------------------------------------


def ref_sigma(ms: FlowModelSampling, t: float) -> float:
    """Uniform time t in [0, 1] -> sigma, float64."""
    if ms.form == "exponential":
        return 0.0 if t <= 0 else math.exp(ms.shift) / (math.exp(ms.shift) + 1 / t - 1)
    return ms.shift * t / (1 + (ms.shift - 1) * t)


def ref_table(ms: FlowModelSampling) -> list[float]:
    n = ms.num_timesteps
    return [ref_sigma(ms, (i + 1) / n) for i in range(n)]


def ref_beta_cdf(x: float, a: float, b: float) -> float:
    """Regularised incomplete beta by its hypergeometric series (symmetry for x > 1/2)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > 0.5:
        return 1 - ref_beta_cdf(1 - x, b, a)
    series, term, n = 0.0, 1.0, 0
    while term > 1e-18:
        series += term
        term *= (a + b + n) / (a + 1 + n) * x
        n += 1
    beta_fn = math.gamma(a) * math.gamma(b) / math.gamma(a + b)
    return x**a * (1 - x) ** b / (a * beta_fn) * series


def ref_beta_ppf(q: float, a: float, b: float) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ref_beta_cdf(mid, a, b) < q else (lo, mid)
    return (lo + hi) / 2


def ref_schedule(name: str, ms: FlowModelSampling, n: int) -> list[float]:
    table = ref_table(ms)
    smin, smax = table[0], table[-1]
    # timestep(sigma) = sigma * multiplier and sigma(timestep) = shift(timestep / multiplier)
    if name == "simple":
        return [table[-(1 + math.floor(Fraction(k * len(table), n)))] for k in range(n)] + [0.0]
    if name in ("normal", "sgm_uniform"):
        count = n + 1 if name == "sgm_uniform" else n
        ts = [smax + (smin - smax) * k / (count - 1) for k in range(count)][:n] if count > 1 else [smax]
        return [ref_sigma(ms, t) for t in ts] + [0.0]
    if name == "karras":
        rho = 7.0
        return [
            (smax ** (1 / rho) + k / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
            for k in range(n)
        ] + [0.0]
    if name == "exponential":
        return [
            math.exp(math.log(smax) + k / (n - 1) * (math.log(smin) - math.log(smax))) for k in range(n)
        ] + [0.0]
    if name == "ddim_uniform":
        picked = [table[i] for i in range(1, len(table), len(table) // n)]
        return picked[::-1] + [0.0]
    if name == "beta":
        indices = [round(ref_beta_ppf(1 - k / n, 0.6, 0.6) * (len(table) - 1)) for k in range(n)]
        kept = [i for j, i in enumerate(indices) if j == 0 or i != indices[j - 1]]
        return [table[i] for i in kept] + [0.0]
    if name == "linear_quadratic":
        return ref_linear_quadratic(n, 0.025) if n > 1 else [1.0, 0.0]
    if name == "kl_optimal":
        return [
            math.tan(math.atan(smax) + k / (n - 1) * (math.atan(smin) - math.atan(smax))) for k in range(n)
        ] + [0.0]
    raise AssertionError(name)


def ref_linear_quadratic(n: int, threshold: float) -> list[float]:
    """1 - s(i): s linear with slope threshold/L on i < L = n // 2, then the quadratic through
    (L, threshold) with the same slope there that reaches 1 at i = n."""
    lin = n // 2
    system = np.array([[lin**2, lin, 1.0], [2 * lin, 1.0, 0.0], [n**2, n, 1.0]])
    a, b, c = np.linalg.solve(system, np.array([threshold, threshold / lin, 1.0]))
    s = [i * threshold / lin for i in range(lin)] + [a * i * i + b * i + c for i in range(lin, n + 1)]
    return [1 - v for v in s]


# --- model sampling ------------------------------------------------------------------------------


@pytest.mark.parametrize("ms", [FLUX, SCHNELL, SD3, FlowModelSampling.flux_for_resolution(512, 768)])
def test_sigma_table_matches_shift_formula(ms: FlowModelSampling) -> None:
    table = ms.sigma_table()
    assert table.dtype == torch.float32 and table.shape == (ms.num_timesteps,)
    np.testing.assert_allclose(table.double().numpy(), ref_table(ms), atol=TOL, rtol=0)
    assert ms.sigma_max == 1.0
    assert ms.sigma_min == pytest.approx(ref_table(ms)[0], abs=TOL)


def test_flux_constants() -> None:
    # ComfyUI's defaults: dev-type shift (mu) 1.15 with 10000 steps; schnell sigma = t with 1000.
    assert FLUX.sigma_min == pytest.approx(math.exp(1.15) / (math.exp(1.15) + 9999), rel=1e-6)
    assert SCHNELL.sigma_min == pytest.approx(1e-3, rel=1e-6)
    # ModelSamplingFlux: mu linear in tokens (w*h/256) between 256 -> 0.5 and 4096 -> 1.15.
    assert FlowModelSampling.flux_for_resolution(1024, 1024).shift == pytest.approx(1.15)
    assert FlowModelSampling.flux_for_resolution(512, 512).shift == pytest.approx(0.63)
    assert FlowModelSampling.flux_for_resolution(1360, 768).shift == pytest.approx(
        0.5 + (4080 - 256) * 0.65 / 3840
    )
    custom = FlowModelSampling.flux_for_resolution(256, 256, max_shift=2.0, base_shift=1.0)
    assert custom.shift == pytest.approx(1.0)


def test_time_conversions() -> None:
    assert FLUX.timestep(0.25) == 0.25
    assert SD3.timestep(0.25) == 250.0
    assert SD3.sigma(250.0) == pytest.approx(ref_sigma(SD3, 0.25), abs=1e-12)
    for p in (0.1, 0.5, 0.9):
        assert FLUX.percent_to_sigma(p) == pytest.approx(ref_sigma(FLUX, 1 - p), abs=1e-12)
        assert SCHNELL.percent_to_sigma(p) == pytest.approx(1 - p, abs=1e-12)
    assert FLUX.percent_to_sigma(0.0) == 1.0 and FLUX.percent_to_sigma(-1) == 1.0
    assert FLUX.percent_to_sigma(1.0) == 0.0


def test_noise_scaling_and_denoised() -> None:
    g = torch.Generator().manual_seed(0)
    noise, latent, v = (torch.randn(2, 16, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    sigma = torch.tensor([0.3, 0.8], dtype=torch.float64)
    s = sigma.view(2, 1, 1, 1)
    torch.testing.assert_close(FLUX.noise_scaling(sigma, noise, latent), s * noise + (1 - s) * latent)
    torch.testing.assert_close(FLUX.calculate_denoised(sigma, v, latent), latent - s * v)
    torch.testing.assert_close(FLUX.inverse_noise_scaling(torch.tensor(0.25), latent), latent / 0.75)
    torch.testing.assert_close(FLUX.inverse_noise_scaling(torch.tensor(0.0), latent), latent)
    assert FLUX.calculate_input(sigma, latent) is latent


@pytest.mark.parametrize(
    "kwargs",
    [
        {"form": "cubic"},
        {"shift": float("nan")},
        {"multiplier": 0.0},
        {"num_timesteps": 1},
        {"form": "linear", "shift": -1.0},
    ],
)
def test_invalid_model_sampling(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        FlowModelSampling(**kwargs)


# --- schedulers ----------------------------------------------------------------------------------


def test_scheduler_names_in_comfyui_order() -> None:
    assert SCHEDULER_NAMES == (
        "simple",
        "sgm_uniform",
        "karras",
        "exponential",
        "ddim_uniform",
        "beta",
        "normal",
        "linear_quadratic",
        "kl_optimal",
    )


@pytest.mark.parametrize("ms", [FLUX, SCHNELL, SD3], ids=["flux", "schnell", "sd3"])
@pytest.mark.parametrize("steps", [1, 4, 7, 20, 30])
@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_schedule_matches_float64_reference(name: str, steps: int, ms: FlowModelSampling) -> None:
    if steps == 1 and name in ("karras", "exponential"):
        pytest.skip("one step leaves no spacing to check")
    if steps == 1 and name == "kl_optimal":
        expected = [1.0, 0.0]  # ComfyUI divides 0 by 0 here; we go straight from sigma_max to 0
    else:
        expected = ref_schedule(name, ms, steps)
    sigmas = calculate_sigmas(ms, name, steps)
    assert sigmas.dtype == torch.float32 and sigmas.ndim == 1
    assert len(sigmas) == len(expected)
    np.testing.assert_allclose(sigmas.double().numpy(), expected, atol=TOL, rtol=0)
    assert sigmas[-1] == 0 and bool(torch.all(sigmas[:-1] > sigmas[1:]))


def test_known_values() -> None:
    # flux-formats 6.3: schnell simple 4 steps; dev simple = BFL schedule shift(1 - k/steps).
    assert calculate_sigmas(SCHNELL, "simple", 4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    np.testing.assert_allclose(
        calculate_sigmas(FLUX, "simple", 20)[:-1].double().numpy(),
        [ref_sigma(FLUX, 1 - k / 20) for k in range(20)],
        atol=TOL,
    )
    # ddim_uniform gives more steps than asked when the table length is not a multiple (as ComfyUI).
    assert len(calculate_sigmas(FLUX, "ddim_uniform", 7)) == 9


def test_denoise_takes_the_tail_of_a_longer_schedule() -> None:
    sigmas = denoise_sigmas(FLUX, "simple", 10, 0.5)
    expected = [ref_sigma(FLUX, 1 - k / 20) for k in range(10, 20)] + [0.0]
    np.testing.assert_allclose(sigmas.double().numpy(), expected, atol=TOL)
    assert torch.equal(denoise_sigmas(FLUX, "beta", 8, 1.0), calculate_sigmas(FLUX, "beta", 8))
    assert len(denoise_sigmas(FLUX, "normal", 6, 0.3)) == 7  # int(6 / 0.3) = 19 steps, last 7 sigmas
    assert denoise_sigmas(FLUX, "simple", 10, 0.0).numel() == 0


def test_ksampler_discards_penultimate_sigma_for_dpm_2() -> None:
    sigmas = ksampler_sigmas(SCHNELL, "simple", 4, sampler="dpm_2")
    np.testing.assert_allclose(sigmas.double().numpy(), [1.0, 0.8, 0.6, 0.4, 0.0], atol=TOL)
    assert torch.equal(
        ksampler_sigmas(SCHNELL, "simple", 4, sampler="euler"), calculate_sigmas(SCHNELL, "simple", 4)
    )
    half = ksampler_sigmas(SCHNELL, "simple", 4, sampler="dpm_2_ancestral", denoise=0.5)
    # int(4 / 0.5) = 8 steps -> 9 computed, the penultimate dropped, the last 5 kept
    nine = ref_schedule("simple", SCHNELL, 9)
    np.testing.assert_allclose(half.double().numpy(), (nine[:-2] + nine[-1:])[-5:], atol=TOL)


def test_slice_sigmas_like_ksampler_advanced() -> None:
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    assert slice_sigmas(sigmas, start_step=1).tolist() == [0.75, 0.5, 0.25, 0.0]
    assert slice_sigmas(sigmas, last_step=2).tolist() == [1.0, 0.75, 0.5]
    assert slice_sigmas(sigmas, start_step=1, last_step=2, force_full_denoise=True).tolist() == [0.75, 0.0]
    assert sigmas.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]  # the input is not modified
    assert slice_sigmas(sigmas, start_step=4) is None
    assert slice_sigmas(sigmas, last_step=10) is sigmas


def test_bad_scheduler_inputs() -> None:
    with pytest.raises(SamplingError, match="unknown scheduler 'nope'"):
        calculate_sigmas(FLUX, "nope", 4)
    with pytest.raises(SamplingError, match="steps must be >= 1"):
        calculate_sigmas(FLUX, "simple", 0)
