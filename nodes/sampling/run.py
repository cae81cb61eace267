"""The sampling values (SAMPLER, NOISE, GUIDER) and the one run path every sampler node goes through.

KSampler, KSamplerAdvanced, SamplerCustom and SamplerCustomAdvanced all end in `run_sampling`,
as ComfyUI's nodes all end in its guider's `sample`: fix the latent's channels, draw the noise,
take the latent into model space, sample with progress/previews/cancel, and take it back out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from executor.errors import Interrupted
from models.flux.denoiser import (
    LATENT_CHANNELS,
    FluxPredictor,
    batch_conds,
    prepare_conditioning,
    process_in,
    process_out,
)
from nodes.runtime.device import compute_device, flux_step_working_bytes, use_models
from nodes.runtime.services import Ctx
from nodes.sampling.previews import PREVIEW_MAX_SIZE, latent_preview_jpeg

log = logging.getLogger(__name__)

Latent = dict[str, Any]


@dataclass(frozen=True)
class SamplerChoice:
    """SAMPLER: a sampler name from the registry plus keyword options for it."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RandomNoise:
    """NOISE: ComfyUI's seeded initial noise for a latent (same seed -> same noise on any device)."""

    seed: int

    def generate_noise(self, latent: Mapping[str, Any]) -> torch.Tensor:
        from models.sampling import prepare_noise

        return prepare_noise(latent["samples"], self.seed, latent.get("batch_index"))


@dataclass(frozen=True)
class EmptyNoise:
    """NOISE: zeros (DisableNoise / add_noise off)."""

    seed: int = 0

    def generate_noise(self, latent: Mapping[str, Any]) -> torch.Tensor:
        samples = latent["samples"]
        return torch.zeros(samples.shape, dtype=samples.dtype, device="cpu")


@dataclass(frozen=True, eq=False)
class GuidanceInputs:
    """What a custom guider builds its denoiser from: the conditional model `(x, sigma, conds) -> x0`,
    the prepared conditionings (positive, negative, and `extra` by name), and the run's settings."""

    model_fn: Any
    positive: Any
    negative: Any
    extra: Mapping[str, Any]
    batch_conds: Any
    post_cfg: Sequence[Any]
    model_sampling: Any


@dataclass(frozen=True, eq=False)
class Guider:
    """GUIDER: model + conditionings; CFG with `negative` (skipped at cfg 1), conditional only without.

    `build` (DualCFGGuider, AdaptiveGuidance, ...) turns `GuidanceInputs` into the run's denoiser
    instead of plain CFG; `conds` holds further conditionings by name (DualCFG's "middle").
    """

    model: Any
    positive: Sequence[Any]
    negative: Sequence[Any] | None = None
    cfg: float = 1.0
    build: Any = None
    conds: Mapping[str, Sequence[Any]] = field(default_factory=dict)


def model_sampling_of(model: Any) -> Any:
    """The handle's model sampling: set by ModelSamplingFlux, else the variant's default as in ComfyUI
    (guidance-distilled models: flux shift 1.15; schnell-type: discrete flow, shift 1.0)."""
    if model.options.sampling is not None:
        return model.options.sampling
    from models.sampling import FlowModelSampling

    if model.params.guidance_embed:
        return FlowModelSampling.flux_default()
    return FlowModelSampling.schnell()


def fix_latent_channels(samples: torch.Tensor) -> torch.Tensor:
    """An all-zero latent with another channel count (e.g. SD's 4) becomes 16 zero channels, as ComfyUI does."""
    if samples.shape[1] == LATENT_CHANNELS:
        return samples
    if torch.count_nonzero(samples) == 0:
        return torch.zeros(samples.shape[0], LATENT_CHANNELS, *samples.shape[2:], dtype=samples.dtype)
    raise ValueError(f"latent has {samples.shape[1]} channels; FLUX latents have {LATENT_CHANNELS}")


def compute_sigmas(model: Any, scheduler: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """Sigmas [n+1] for `steps` steps ending in 0; denoise < 1 keeps the tail of a longer schedule."""
    from models.sampling import denoise_sigmas

    return denoise_sigmas(model_sampling_of(model), scheduler, steps, denoise)


def run_sampling(
    ctx: Ctx,
    guider: Guider,
    sampler: SamplerChoice,
    sigmas: torch.Tensor,
    noise: Any,
    latent: Mapping[str, Any],
    *,
    seed: int | None = None,
) -> tuple[Latent, Latent]:
    """Sample `latent` along `sigmas`; returns (output, denoised output) LATENT dicts (copies)."""
    from models.sampling import Interrupted as SamplingInterrupted
    from models.sampling import sample

    samples = fix_latent_channels(latent["samples"])
    source = dict(latent, samples=samples)
    noise_tensor = noise.generate_noise(source)
    out = dict(source)
    if sigmas.numel() == 0:  # denoise 0: nothing to do (ComfyUI returns the input)
        return out, dict(out)
    model = guider.model
    model_sampling = model_sampling_of(model)
    # ComfyUI leaves an all-zero latent as is instead of shifting it into model space.
    latent_in = process_in(samples) if torch.count_nonzero(samples) > 0 else samples
    steps = sigmas.numel() - 1
    last: dict[str, torch.Tensor] = {}
    settings = getattr(getattr(ctx, "services", None), "settings", None)
    preview_size = getattr(settings, "preview_max_size", PREVIEW_MAX_SIZE)

    def on_step(info: Any) -> None:
        last["x0"] = info.denoised
        preview = None
        try:
            preview = latent_preview_jpeg(info.denoised, max_size=preview_size)
        except (ValueError, OSError) as exc:  # a preview is never worth failing the prompt for
            log.debug("no preview for step %d: %s", info.step, exc)
        ctx.report_progress(info.step + 1, steps, preview)

    from nodes.control import sampling as control_sampling

    controls = control_sampling.applications([guider.positive, guider.negative, *guider.conds.values()])
    encoded = control_sampling.encode_hints(ctx, controls, samples.shape[-2], samples.shape[-1])
    working = flux_step_working_bytes(ctx, model, samples, [guider.positive, guider.negative])
    with use_models(
        ctx, model, *control_sampling.model_extra_modules(model, controls), working_bytes=working
    ):
        device = compute_device(ctx, model.module)
        prepared = control_sampling.prepare(
            ctx,
            controls,
            samples.shape[-2],
            samples.shape[-1],
            percent_to_sigma=model_sampling.percent_to_sigma,
            device=device,
            encoded=encoded,
        )
        predictor = FluxPredictor(
            model.module,
            model.params,
            percent_to_sigma=model_sampling.percent_to_sigma,
            device=device,
            controls=prepared,
            attention=control_sampling.ip_attention(model),
        )
        positive: Any = prepare_conditioning(guider.positive)
        negative: Any = prepare_conditioning(guider.negative) if guider.negative is not None else None
        post_cfg = tuple(model.options.extras.get("post_cfg", ()))
        denoiser: Any = predictor
        if guider.build is not None:
            extra = {name: prepare_conditioning(c) for name, c in guider.conds.items()}
            denoiser = guider.build(
                GuidanceInputs(predictor, positive, negative, extra, batch_conds, post_cfg, model_sampling)
            )
            positive = negative = None
        try:
            x = sample(
                denoiser,
                positive=positive,
                negative=negative,
                cfg=guider.cfg,
                batch_conds=batch_conds,
                post_cfg=post_cfg,
                noise=noise_tensor,
                latent_image=latent_in,
                sigmas=sigmas,
                sampler=sampler.name,
                sampler_options=sampler.options,
                model_sampling=model_sampling,
                denoise_mask=latent.get("noise_mask"),
                differential_diffusion=model.options.extras.get("differential_diffusion"),
                noise_seed=noise.seed if seed is None else seed,
                callback=on_step,
                should_stop=ctx.should_stop,
            )
        except SamplingInterrupted as exc:
            raise Interrupted(f"sampling interrupted in node {getattr(ctx, 'node_id', '?')}") from exc
    out["samples"] = process_out(x.float().cpu())
    denoised = dict(out)
    if "x0" in last:
        denoised["samples"] = process_out(last["x0"].float().cpu())
    return out, denoised
