"""The sampler registry: ComfyUI KSampler names -> sampler functions, in ComfyUI's order.

Every sampler has the signature `(denoiser, x, sigmas, *, noise_sampler, callback, should_stop,
**options) -> x`. Names follow ComfyUI's SAMPLER_NAMES (the cfg_pp, res_multistep,
er_sde, seeds, sa_solver, heunpp2, exp_heun, dpm_fast/adaptive and ddpm samplers are not implemented). The *_gpu names exist in ComfyUI only to put the Brownian-tree
noise on the GPU; here noise is injected by the caller, so they are the same functions.
"""

from __future__ import annotations

from ..contract import SamplerFn
from ..errors import SamplingError
from .ancestral import dpm_2_ancestral, dpmpp_2s_ancestral, euler_ancestral, lcm
from .multistep import deis, dpmpp_2m, ipndm, ipndm_v
from .ode import dpm_2, euler, heun, lms
from .sde import dpmpp_2m_sde, dpmpp_2m_sde_heun, dpmpp_3m_sde, dpmpp_sde
from .unipc import uni_pc, uni_pc_bh2

SAMPLERS: dict[str, SamplerFn] = {
    "euler": euler,
    "euler_ancestral": euler_ancestral,
    "heun": heun,
    "dpm_2": dpm_2,
    "dpm_2_ancestral": dpm_2_ancestral,
    "lms": lms,
    "dpmpp_2s_ancestral": dpmpp_2s_ancestral,
    "dpmpp_sde": dpmpp_sde,
    "dpmpp_sde_gpu": dpmpp_sde,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_2m_sde": dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": dpmpp_2m_sde,
    "dpmpp_2m_sde_heun": dpmpp_2m_sde_heun,
    "dpmpp_2m_sde_heun_gpu": dpmpp_2m_sde_heun,
    "dpmpp_3m_sde": dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": dpmpp_3m_sde,
    "lcm": lcm,
    "ipndm": ipndm,
    "ipndm_v": ipndm_v,
    "deis": deis,
    "ddim": euler,
    "uni_pc": uni_pc,
    "uni_pc_bh2": uni_pc_bh2,
}
SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)

# ComfyUI's "ddim" is euler whose inpainting re-noises the kept region with its own noise
# (a CPU generator seeded with seed + 1) instead of the initial noise.
RANDOM_INPAINT_NOISE_SAMPLERS = frozenset({"ddim"})

# Samplers that draw from the noise sampler (the others are deterministic ODE solvers).
STOCHASTIC_SAMPLERS = frozenset(
    {
        "euler_ancestral",
        "dpm_2_ancestral",
        "dpmpp_2s_ancestral",
        "dpmpp_sde",
        "dpmpp_sde_gpu",
        "dpmpp_2m_sde",
        "dpmpp_2m_sde_gpu",
        "dpmpp_2m_sde_heun",
        "dpmpp_2m_sde_heun_gpu",
        "dpmpp_3m_sde",
        "dpmpp_3m_sde_gpu",
        "lcm",
    }
)

# Samplers whose noise ComfyUI draws from a Brownian tree seeded with the noise seed (the others use
# an independent N(0, 1) stream seeded with seed + 1).
BROWNIAN_NOISE_SAMPLERS = frozenset(
    {
        "dpmpp_sde",
        "dpmpp_sde_gpu",
        "dpmpp_2m_sde",
        "dpmpp_2m_sde_gpu",
        "dpmpp_2m_sde_heun",
        "dpmpp_2m_sde_heun_gpu",
        "dpmpp_3m_sde",
        "dpmpp_3m_sde_gpu",
    }
)


def get_sampler(name: str) -> SamplerFn:
    """The sampler registered under a ComfyUI name; SamplingError naming the known ones otherwise."""
    fn = SAMPLERS.get(name)
    if fn is None:
        raise SamplingError(f"unknown sampler {name!r}; known: {', '.join(SAMPLER_NAMES)}")
    return fn


__all__ = [
    "BROWNIAN_NOISE_SAMPLERS",
    "RANDOM_INPAINT_NOISE_SAMPLERS",
    "SAMPLERS",
    "SAMPLER_NAMES",
    "STOCHASTIC_SAMPLERS",
    "get_sampler",
]
