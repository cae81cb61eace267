"""KSampler, KSamplerAdvanced and the MODEL patches that change how a FLUX model samples."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from executor.schema import (
    MAX_RESOLUTION,
    SEED_MAX,
    Combo,
    Float,
    Int,
    Node,
    Output,
    Schema,
    Typed,
)
from models.sampling import SAMPLER_NAMES, SCHEDULER_NAMES
from nodes.runtime.services import Ctx
from nodes.runtime.types import LATENT, MODEL
from nodes.sampling.run import (
    EmptyNoise,
    Guider,
    Latent,
    RandomNoise,
    SamplerChoice,
    compute_sigmas,
    fix_latent_channels,
    run_sampling,
)


def ksample(
    ctx: Ctx,
    model: Any,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Any,
    negative: Any,
    latent: Mapping[str, Any],
    *,
    denoise: float = 1.0,
    add_noise: bool = True,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
) -> Latent:
    """ComfyUI's common_ksampler for FLUX: schedule, optional step window, sample with CFG."""
    sigmas = compute_sigmas(model, scheduler, steps, denoise)
    if last_step is not None and last_step < sigmas.numel() - 1:
        sigmas = sigmas[: last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0.0
    if start_step is not None:
        if start_step >= sigmas.numel() - 1:  # nothing left to run: the input comes back unchanged
            return dict(latent, samples=fix_latent_channels(latent["samples"]))
        sigmas = sigmas[start_step:]
    noise = RandomNoise(seed) if add_noise else EmptyNoise()
    guider = Guider(model, positive, negative, cfg)
    out, _ = run_sampling(ctx, guider, SamplerChoice(sampler_name), sigmas, noise, latent, seed=seed)
    return out


class KSampler(Node):
    schema = Schema(
        "KSampler",
        category="sampling",
        outputs=(Output("LATENT", tooltip="The denoised latent."),),
        description="Uses the provided model, positive and negative conditioning to denoise the latent image.",
        inputs=(
            Typed("model", "MODEL", tooltip="The model used for denoising the input latent."),
            Int(
                "seed",
                0,
                min=0,
                max=SEED_MAX,
                control_after_generate=True,
                tooltip="The random seed used for creating the noise.",
            ),
            Int("steps", 20, min=1, max=10000, tooltip="The number of steps used in the denoising process."),
            Float(
                "cfg",
                8.0,
                min=0.0,
                max=100.0,
                step=0.1,
                round=0.01,
                tooltip="The Classifier-Free Guidance scale. FLUX dev models use 1.0 and FluxGuidance instead.",
            ),
            Combo("sampler_name", SAMPLER_NAMES, tooltip="The algorithm used when sampling."),
            Combo("scheduler", SCHEDULER_NAMES, tooltip="How noise is gradually removed to form the image."),
            Typed("positive", "CONDITIONING", tooltip="What to include in the image."),
            Typed("negative", "CONDITIONING", tooltip="What to exclude from the image."),
            Typed("latent_image", "LATENT", tooltip="The latent image to denoise."),
            Float(
                "denoise",
                1.0,
                min=0.0,
                max=1.0,
                step=0.01,
                tooltip="Lower values keep the structure of the initial image (image to image).",
            ),
        ),
    )

    @classmethod
    def execute(
        cls,
        ctx: Ctx,
        model: Any,
        seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: Any,
        negative: Any,
        latent_image: Mapping[str, Any],
        denoise: float = 1.0,
    ) -> tuple[Latent]:
        return (
            ksample(
                ctx,
                model,
                seed,
                steps,
                cfg,
                sampler_name,
                scheduler,
                positive,
                negative,
                latent_image,
                denoise=denoise,
            ),
        )


class KSamplerAdvanced(Node):
    schema = Schema(
        "KSamplerAdvanced",
        category="sampling",
        outputs=(LATENT,),
        inputs=(
            Typed("model", "MODEL"),
            Combo("add_noise", ("enable", "disable")),
            Int("noise_seed", 0, min=0, max=SEED_MAX, control_after_generate=True),
            Int("steps", 20, min=1, max=10000),
            Float("cfg", 8.0, min=0.0, max=100.0, step=0.1, round=0.01),
            Combo("sampler_name", SAMPLER_NAMES),
            Combo("scheduler", SCHEDULER_NAMES),
            Typed("positive", "CONDITIONING"),
            Typed("negative", "CONDITIONING"),
            Typed("latent_image", "LATENT"),
            Int("start_at_step", 0, min=0, max=10000),
            Int("end_at_step", 10000, min=0, max=10000),
            Combo("return_with_leftover_noise", ("disable", "enable")),
        ),
    )

    @classmethod
    def execute(
        cls,
        ctx: Ctx,
        model: Any,
        add_noise: str,
        noise_seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: Any,
        negative: Any,
        latent_image: Mapping[str, Any],
        start_at_step: int,
        end_at_step: int,
        return_with_leftover_noise: str,
    ) -> tuple[Latent]:
        return (
            ksample(
                ctx,
                model,
                noise_seed,
                steps,
                cfg,
                sampler_name,
                scheduler,
                positive,
                negative,
                latent_image,
                add_noise=add_noise != "disable",
                start_step=start_at_step,
                last_step=end_at_step,
                force_full_denoise=return_with_leftover_noise != "enable",
            ),
        )


class ModelSamplingFlux(Node):
    schema = Schema(
        "ModelSamplingFlux",
        category="advanced/model",
        outputs=(MODEL,),
        inputs=(
            Typed("model", "MODEL"),
            Float("max_shift", 1.15, min=0.0, max=100.0, step=0.01),
            Float("base_shift", 0.5, min=0.0, max=100.0, step=0.01),
            Int("width", 1024, min=16, max=MAX_RESOLUTION, step=8),
            Int("height", 1024, min=16, max=MAX_RESOLUTION, step=8),
        ),
    )

    @classmethod
    def execute(cls, model: Any, max_shift: float, base_shift: float, width: int, height: int) -> tuple[Any]:
        from models.sampling import FlowModelSampling

        sampling = FlowModelSampling.flux_for_resolution(
            width, height, max_shift=max_shift, base_shift=base_shift
        )
        return (model.with_options(sampling=sampling),)


class DifferentialDiffusion(Node):
    schema = Schema(
        "DifferentialDiffusion",
        display_name="Differential Diffusion",
        category="_for_testing",
        experimental=True,
        outputs=(MODEL,),
        description="Soft inpainting: each step denoises the parts of the noise mask above a threshold that "
        "falls from 1 to 0 over the schedule.",
        inputs=(Typed("model", "MODEL"), Float("strength", 1.0, min=0.0, max=1.0, step=0.01, optional=True)),
    )

    @classmethod
    def execute(cls, model: Any, strength: float = 1.0) -> tuple[Any]:
        extras = dict(model.options.extras, differential_diffusion=float(strength))
        return (model.with_options(extras=extras),)


NODES = (KSampler, KSamplerAdvanced, ModelSamplingFlux, DifferentialDiffusion)
