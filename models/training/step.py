"""One training step's pieces: equal-shape batches drawn reproducibly per sample, the flow-matching
objective (the module DDP wraps) and the fixed-timestep evaluation loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from models.flux.apply import flux_forward_latent
from models.flux.model import Flux

from .config import TrainConfig
from .data import Sample, TrainingData, step_generator
from .flow import flow_loss, noised, sample_timesteps

FLUX_LATENT_SCALE, FLUX_LATENT_SHIFT = 0.3611, 0.1159
EVAL_TIMESTEPS = (0.25, 0.5, 0.75)


@dataclass(frozen=True, eq=False)
class Batch:
    """Same-shape samples stacked: x0 [B, C, h, w] model-space latents, their draws and conditioning."""

    x0: Tensor
    noise: Tensor
    t: Tensor
    context: Tensor
    pooled: Tensor
    guidance: Tensor | None
    mask: Tensor | None


class Objective(nn.Module):
    """Holds the adapters as its only parameters (what DDP syncs); the base model is not registered."""

    def __init__(self, adapter_modules: nn.ModuleDict, model: nn.Module, config: TrainConfig) -> None:
        super().__init__()
        self.adapters = adapter_modules
        self._model = [model]  # a list: keeps the base out of parameters() / state_dict()
        self.config = config

    def forward(self, batches: Sequence[Batch]) -> Tensor:
        """Sum over all samples of the per-sample loss."""
        model, cfg = self._model[0], self.config
        total = torch.zeros((), device=batches[0].x0.device)
        autocast = cfg.training_dtype == "bf16"
        for b in batches:
            with torch.autocast(b.x0.device.type, dtype=torch.bfloat16, enabled=autocast):
                v = flux_forward_latent(
                    cast(Flux, model), noised(b.x0, b.noise, b.t), b.t, b.context, b.pooled, b.guidance
                )
            losses = flow_loss(
                v, b.x0, b.noise, b.t, loss_function=cfg.loss_function, target=cfg.loss_target, mask=b.mask
            )
            total = total + losses.sum()
        return total


def make_batches(
    samples: Sequence[Sample],
    ids: Sequence[int],
    data: TrainingData,
    config: TrainConfig,
    *,
    micro_step: int,
    device: torch.device,
    guidance_embed: bool,
    latent_scale: float,
    latent_shift: float,
) -> list[Batch]:
    """Draw noise / time / caption dropout per sample (from (seed, micro_step, id)) and group equal shapes."""
    groups: dict[tuple[int, ...], list[tuple[Tensor, ...]]] = {}
    for sample, gid in zip(samples, ids):
        gen = step_generator(config.seed, micro_step, gid)
        x0 = (sample.latent.float() - latent_shift) * latent_scale
        noise = torch.randn(x0.shape, generator=gen)
        t = sample_timesteps(
            1,
            gen,
            method=config.timestep_sampling,
            latent_hw=tuple(x0.shape[-2:]),  # type: ignore[arg-type]
            sigmoid_scale=config.sigmoid_scale,
            logit_mean=config.logit_mean,
            logit_std=config.logit_std,
            discrete_flow_shift=config.discrete_flow_shift,
        )
        drop = torch.rand(1, generator=gen).item() < config.caption_dropout
        context, pooled = sample.context, sample.pooled
        if drop and data.empty_context is not None and data.empty_pooled is not None:
            context, pooled = data.empty_context, data.empty_pooled
        g = (
            config.guidance
            if config.guidance is not None
            else (sample.guidance if sample.guidance is not None else 3.5)
        )
        mask = sample.mask if sample.mask is not None else torch.ones(0)
        key = (*x0.shape, *context.shape, mask.numel() > 0)
        groups.setdefault(key, []).append(
            (x0, noise, t, context.float(), pooled.float(), torch.tensor([g]), mask)
        )
    out = []
    for items in groups.values():
        cols: list[list[Tensor]] = [list(col) for col in zip(*items)]
        has_mask = cols[6][0].numel() > 0
        out.append(Batch(
            x0=torch.stack(cols[0]).to(device), noise=torch.stack(cols[1]).to(device),
            t=torch.cat(cols[2]).to(device), context=torch.stack(cols[3]).to(device),
            pooled=torch.stack(cols[4]).to(device), guidance=torch.cat(cols[5]).to(device) if guidance_embed else None,
            mask=torch.stack(cols[6])[:, None].to(device) if has_mask else None,
        ))  # fmt: skip
    return out


@torch.no_grad()
def evaluation_loss(
    model: nn.Module,
    samples: Sequence[Sample],
    config: TrainConfig,
    *,
    latent_scale: float = FLUX_LATENT_SCALE,
    latent_shift: float = FLUX_LATENT_SHIFT,
    timesteps: Sequence[float] = EVAL_TIMESTEPS,
    seed: int = 1234,
) -> float:
    """Mean flow loss at fixed timesteps with fixed noise: comparable from step to step (no sampling noise)."""
    device = next(model.parameters()).device
    guidance_embed = bool(getattr(getattr(model, "params", None), "guidance_embed", True))
    total, count = 0.0, 0
    k = len(timesteps)
    for i, sample in enumerate(samples):  # one forward per sample, its timesteps as the batch
        x0 = ((sample.latent.float() - latent_shift) * latent_scale)[None].to(device)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + i)).to(device)
        x0, noise = x0.expand(k, -1, -1, -1), noise.expand(k, -1, -1, -1)
        t = torch.tensor([float(tv) for tv in timesteps], device=device)
        g = config.guidance if config.guidance is not None else (sample.guidance or 3.5)
        v = flux_forward_latent(
            cast(Flux, model),
            noised(x0, noise, t),
            t,
            sample.context[None].float().to(device),
            sample.pooled[None].float().to(device),
            torch.full((k,), g, device=device) if guidance_embed else None,
        )
        mask = sample.mask[None, None].to(device) if sample.mask is not None else None
        losses = flow_loss(
            v, x0, noise, t, loss_function=config.loss_function, target=config.loss_target, mask=mask
        )
        total += float(losses.sum())
        count += k
    return total / max(count, 1)
