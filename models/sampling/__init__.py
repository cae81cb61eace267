"""Sampling for flow models: model sampling, schedules, samplers, guiders, noise, previews.

Depends only on the denoiser contract (`contract.py`), never on a model architecture.
"""

from __future__ import annotations

from .brownian import brownian_noise_sampler
from .contract import Denoiser, NoiseSampler, SamplerFn, ShouldStop, StepCallback, StepInfo
from .errors import Interrupted, SamplingError
from .guiders import (
    AdaptiveState,
    PostCfg,
    PostCfgArgs,
    adaptive_denoiser,
    batch_tensor_conds,
    cfg_combine,
    cfg_denoiser,
    cfg_zero_star,
    differential_diffusion,
    dual_cfg_denoiser,
    masked_denoiser,
    prepare_denoise_mask,
)
from .model_sampling import FlowModelSampling
from .noise import make_noise_sampler, prepare_noise
from .sample import sample
from .samplers import BROWNIAN_NOISE_SAMPLERS, SAMPLER_NAMES, SAMPLERS, STOCHASTIC_SAMPLERS, get_sampler
from .schedules import (
    SCHEDULER_NAMES,
    SCHEDULERS,
    calculate_sigmas,
    denoise_sigmas,
    ksampler_sigmas,
    slice_sigmas,
)

__all__ = [
    "AdaptiveState",
    "PostCfg",
    "PostCfgArgs",
    "adaptive_denoiser",
    "cfg_zero_star",
    "dual_cfg_denoiser",
    "BROWNIAN_NOISE_SAMPLERS",
    "SAMPLERS",
    "SAMPLER_NAMES",
    "SCHEDULERS",
    "SCHEDULER_NAMES",
    "STOCHASTIC_SAMPLERS",
    "Denoiser",
    "FlowModelSampling",
    "Interrupted",
    "NoiseSampler",
    "SamplerFn",
    "SamplingError",
    "ShouldStop",
    "StepCallback",
    "StepInfo",
    "batch_tensor_conds",
    "brownian_noise_sampler",
    "calculate_sigmas",
    "cfg_combine",
    "cfg_denoiser",
    "denoise_sigmas",
    "differential_diffusion",
    "get_sampler",
    "ksampler_sigmas",
    "make_noise_sampler",
    "masked_denoiser",
    "prepare_denoise_mask",
    "prepare_noise",
    "sample",
    "slice_sigmas",
]
