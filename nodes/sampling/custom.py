"""ComfyUI's custom-sampling nodes: noise, guiders, sampler and scheduler pickers, SamplerCustom(Advanced)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from executor.schema import SEED_MAX, Boolean, Combo, Float, Int, Node, Output, Schema, Typed
from models.sampling import SAMPLER_NAMES, SCHEDULER_NAMES, schedules
from nodes.runtime.services import Ctx
from nodes.runtime.types import GUIDER, NOISE, SAMPLER, SIGMAS
from nodes.sampling.run import (
    EmptyNoise,
    Guider,
    Latent,
    RandomNoise,
    SamplerChoice,
    compute_sigmas,
    model_sampling_of,
    run_sampling,
)


class RandomNoiseNode(Node):
    schema = Schema(
        "RandomNoise",
        category="sampling/custom_sampling/noise",
        outputs=(NOISE,),
        inputs=(Int("noise_seed", 0, min=0, max=SEED_MAX, control_after_generate=True),),
    )

    @classmethod
    def execute(cls, noise_seed: int) -> tuple[RandomNoise]:
        return (RandomNoise(noise_seed),)


class DisableNoise(Node):
    schema = Schema("DisableNoise", category="sampling/custom_sampling/noise", outputs=(NOISE,))

    @classmethod
    def execute(cls) -> tuple[EmptyNoise]:
        return (EmptyNoise(),)


class KSamplerSelect(Node):
    schema = Schema(
        "KSamplerSelect",
        category="sampling/custom_sampling/samplers",
        outputs=(SAMPLER,),
        inputs=(Combo("sampler_name", SAMPLER_NAMES),),
    )

    @classmethod
    def execute(cls, sampler_name: str) -> tuple[SamplerChoice]:
        return (SamplerChoice(sampler_name),)


class BasicScheduler(Node):
    schema = Schema(
        "BasicScheduler",
        category="sampling/custom_sampling/schedulers",
        outputs=(SIGMAS,),
        inputs=(
            Typed("model", "MODEL"),
            Combo("scheduler", SCHEDULER_NAMES),
            Int("steps", 20, min=1, max=10000),
            Float("denoise", 1.0, min=0.0, max=1.0, step=0.01),
        ),
    )

    @classmethod
    def execute(cls, model: Any, scheduler: str, steps: int, denoise: float) -> tuple[torch.Tensor]:
        return (compute_sigmas(model, scheduler, steps, denoise),)


class BetaSamplingScheduler(Node):
    schema = Schema(
        "BetaSamplingScheduler",
        category="sampling/custom_sampling/schedulers",
        outputs=(SIGMAS,),
        inputs=(
            Typed("model", "MODEL"),
            Int("steps", 20, min=1, max=10000),
            Float("alpha", 0.6, min=0.0, max=50.0, step=0.01, round=False),
            Float("beta", 0.6, min=0.0, max=50.0, step=0.01, round=False),
        ),
    )

    @classmethod
    def execute(cls, model: Any, steps: int, alpha: float, beta: float) -> tuple[torch.Tensor]:
        return (schedules.beta(model_sampling_of(model), steps, alpha=alpha, beta=beta),)


class SetFirstSigma(Node):
    schema = Schema(
        "SetFirstSigma",
        category="sampling/custom_sampling/sigmas",
        outputs=(SIGMAS,),
        inputs=(
            Typed("sigmas", "SIGMAS"),
            Float("sigma", 136.0, min=0.0, max=20000.0, step=0.001, round=False),
        ),
    )

    @classmethod
    def execute(cls, sigmas: torch.Tensor, sigma: float) -> tuple[torch.Tensor]:
        out = sigmas.clone()
        out[0] = sigma
        return (out,)


class BasicGuider(Node):
    schema = Schema(
        "BasicGuider",
        display_name="Basic Guider",
        category="sampling/custom_sampling/guiders",
        outputs=(GUIDER,),
        inputs=(Typed("model", "MODEL"), Typed("conditioning", "CONDITIONING")),
    )

    @classmethod
    def execute(cls, model: Any, conditioning: Any) -> tuple[Guider]:
        return (Guider(model, conditioning),)


class CFGGuider(Node):
    schema = Schema(
        "CFGGuider",
        display_name="CFG Guider",
        category="sampling/custom_sampling/guiders",
        outputs=(GUIDER,),
        inputs=(
            Typed("model", "MODEL"),
            Typed("positive", "CONDITIONING"),
            Typed("negative", "CONDITIONING"),
            Float("cfg", 8.0, min=0.0, max=100.0, step=0.1, round=0.01),
        ),
    )

    @classmethod
    def execute(cls, model: Any, positive: Any, negative: Any, cfg: float) -> tuple[Guider]:
        return (Guider(model, positive, negative, cfg),)


_SAMPLE_OUTPUTS = (Output("LATENT", "output"), Output("LATENT", "denoised_output"))


class SamplerCustom(Node):
    schema = Schema(
        "SamplerCustom",
        category="sampling/custom_sampling",
        outputs=_SAMPLE_OUTPUTS,
        inputs=(
            Typed("model", "MODEL"),
            Boolean("add_noise", True),
            Int("noise_seed", 0, min=0, max=SEED_MAX, control_after_generate=True),
            Float("cfg", 8.0, min=0.0, max=100.0, step=0.1, round=0.01),
            Typed("positive", "CONDITIONING"),
            Typed("negative", "CONDITIONING"),
            Typed("sampler", "SAMPLER"),
            Typed("sigmas", "SIGMAS"),
            Typed("latent_image", "LATENT"),
        ),
    )

    @classmethod
    def execute(
        cls,
        ctx: Ctx,
        model: Any,
        add_noise: bool,
        noise_seed: int,
        cfg: float,
        positive: Any,
        negative: Any,
        sampler: SamplerChoice,
        sigmas: torch.Tensor,
        latent_image: Mapping[str, Any],
    ) -> tuple[Latent, Latent]:
        noise = RandomNoise(noise_seed) if add_noise else EmptyNoise()
        return run_sampling(
            ctx, Guider(model, positive, negative, cfg), sampler, sigmas, noise, latent_image, seed=noise_seed
        )


class SamplerCustomAdvanced(Node):
    schema = Schema(
        "SamplerCustomAdvanced",
        category="sampling/custom_sampling",
        outputs=_SAMPLE_OUTPUTS,
        inputs=(
            Typed("noise", "NOISE"),
            Typed("guider", "GUIDER"),
            Typed("sampler", "SAMPLER"),
            Typed("sigmas", "SIGMAS"),
            Typed("latent_image", "LATENT"),
        ),
    )

    @classmethod
    def execute(
        cls,
        ctx: Ctx,
        noise: Any,
        guider: Guider,
        sampler: SamplerChoice,
        sigmas: torch.Tensor,
        latent_image: Mapping[str, Any],
    ) -> tuple[Latent, Latent]:
        return run_sampling(ctx, guider, sampler, sigmas, noise, latent_image)


NODES = (
    RandomNoiseNode,
    DisableNoise,
    KSamplerSelect,
    BasicScheduler,
    BetaSamplingScheduler,
    SetFirstSigma,
    BasicGuider,
    CFGGuider,
    SamplerCustom,
    SamplerCustomAdvanced,
)
