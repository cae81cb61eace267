"""The training loop: one function, top to bottom (setup, resume, steps, saves, teardown).

Runs single-process or, when torch.distributed is initialised (torchrun), data-parallel: each
rank takes its slice of every global batch, DistributedDataParallel all-reduces the adapter
gradients, and only rank 0 writes files and reports. The base model is never modified: the
adapters are forward hooks removed at the end, and gradient checkpointing wraps block forwards
only for the length of the run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from models.flux.apply import flux_forward_latent
from models.flux.model import Flux

from . import adapters as adapters_mod
from .checkpoint import (
    TrainState,
    lora_metadata,
    save_safetensors,
    save_state,
    state_path_for,
    to_torch_dtype,
)
from .config import TrainConfig
from .data import Sample, TrainingData, step_generator, take
from .export import to_key_style
from .flow import flow_loss, noised, sample_timesteps
from .schedule import lr_at

log = logging.getLogger(__name__)

FLUX_LATENT_SCALE, FLUX_LATENT_SHIFT = 0.3611, 0.1159
EVAL_TIMESTEPS = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class StepReport:
    step: int  # optimizer steps done
    total: int
    loss: float
    smoothed: float
    lr: float
    grad_norm: float
    eval_loss: float | None = None


@dataclass(frozen=True, eq=False)
class TrainResult:
    adapters: adapters_mod.AdapterSet  # detached; EMA weights when EMA was on
    lora: dict[str, Tensor]  # the LoRA file's tensors
    metadata: dict[str, str]
    state: TrainState
    stopped: bool  # interrupted before `config.steps`


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


class _Objective(nn.Module):
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


def _checkpointed(blocks: Sequence[nn.Module]) -> Callable[[], None]:
    """Wrap each block's forward in activation checkpointing; returns the undo."""
    for block in blocks:
        original = block.forward

        def forward(*args: object, _f: Callable[..., object] = original, **kwargs: object) -> object:
            return checkpoint(_f, *args, use_reentrant=False, **kwargs)  # type: ignore[arg-type]

        block.forward = forward  # type: ignore[method-assign]

    def undo() -> None:
        for block in blocks:
            vars(block).pop("forward", None)

    return undo


def train(
    model: nn.Module,
    data: TrainingData,
    config: TrainConfig,
    *,
    resume: TrainState | None = None,
    checkpoint_dir: Path | None = None,
    checkpoint_name: str = "lora",
    eval_samples: Sequence[Sample] = (),
    latent_scale: float = FLUX_LATENT_SCALE,
    latent_shift: float = FLUX_LATENT_SHIFT,
    metadata: dict[str, str] | None = None,
    on_step: Callable[[StepReport], None] | None = None,
    on_validate: Callable[[int, adapters_mod.AdapterSet], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train adapters on `model` (a FLUX transformer, frozen, left untouched) for `config.steps` steps.

    resume: a state from `checkpoint.load_state` (its step, cursor, adapters, optimizer, EMA).
    checkpoint_dir: periodic (`config.save_every`) and final saves of `<name>_<step>_steps.safetensors`
        plus its `.state.safetensors`, rank 0 only, atomically. None: nothing is written.
    eval_samples: held-out samples for the fixed-timestep evaluation loss (default: the first 2 training samples).
    on_step / on_validate: rank 0 callbacks after each step / every `config.validate_every` steps
        (on_validate gets the adapters while they are hooked into `model`).
    should_stop: checked after every step; a stop ends the run after that step and saves.
    """
    # ---- setup ---------------------------------------------------------------------------------
    cfg = config
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = next(model.parameters()).device
    guidance_embed = bool(getattr(getattr(model, "params", None), "guidance_embed", True))
    state = resume if resume is not None else TrainState()
    state.config_json = cfg.to_json()
    n = len(data)
    adapters = adapters_mod.create(
        model,
        algorithm=cfg.algorithm,
        rank=cfg.rank,
        alpha=cfg.alpha,
        targets=cfg.targets,
        seed=cfg.seed,
        dtype=to_torch_dtype(cfg.lora_dtype),
        device=device,
        lokr_factor=cfg.lokr_factor,
    )
    params = dict(adapters.modules.named_parameters())
    if resume is not None and resume.adapters:
        if any(
            k.startswith(("diffusion_model.", "lora_unet_")) for k in resume.adapters
        ):  # a LoRA file's keys
            style = "kohya" if next(iter(resume.adapters)).startswith("lora_unet_") else "comfyui"
            adapters_mod.load_adapter_weights(adapters, resume.adapters, key_style=style)
        else:
            with torch.no_grad():
                for key, p in params.items():
                    p.copy_(resume.adapters[key])
    objective: nn.Module = _Objective(adapters.modules, model, cfg)
    if distributed:
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=None if device.type == "cpu" else [device]
        )
    ordered = list(params.values())
    if cfg.optimizer == "AdamW":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            ordered, lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
    elif cfg.optimizer == "Adam":
        optimizer = torch.optim.Adam(ordered, lr=cfg.learning_rate)
    elif cfg.optimizer == "SGD":
        optimizer = torch.optim.SGD(ordered, lr=cfg.learning_rate)
    else:
        optimizer = torch.optim.RMSprop(ordered, lr=cfg.learning_rate)
    if resume is not None and resume.optimizer:
        optimizer.load_state_dict(resume.optimizer)
    ema = {k: (resume.ema[k].to(p) if resume and k in resume.ema else p.detach().clone()) for k, p in params.items()} \
        if cfg.ema_decay > 0 else {}  # fmt: skip
    holdout = list(eval_samples) or list(data.samples[: min(2, n)])
    blocks = [*getattr(model, "double_blocks", ()), *getattr(model, "single_blocks", ())]
    undo_checkpointing = _checkpointed(blocks) if cfg.gradient_checkpointing else (lambda: None)
    adapters.hook_into(model)
    smoothed = state.losses[-1] if state.losses else math.nan
    stopped = False

    def save(step: int) -> None:
        if checkpoint_dir is None or rank != 0:
            return
        path = Path(checkpoint_dir) / f"{checkpoint_name}_{step}_steps.safetensors"
        weights = _with_ema(adapters, ema)
        save_safetensors(
            path,
            to_key_style(adapters_mod.lora_state_dict(weights), cfg.key_style),
            lora_metadata(
                cfg.to_json(),
                steps=step,
                algorithm=cfg.algorithm,
                rank=cfg.rank,
                alpha=cfg.alpha,
                extra=metadata,
            ),
        )
        state.adapters = {k: p.detach().clone() for k, p in params.items()}
        state.ema = {k: v.clone() for k, v in ema.items()}
        state.optimizer = optimizer.state_dict()
        save_state(state_path_for(path), state)
        log.info("saved %s (+ state)", path)

    # ---- steps -----------------------------------------------------------------------------------
    try:
        with torch.inference_mode(False), torch.enable_grad():
            model.requires_grad_(False)
            while state.step < cfg.steps:
                step = state.step
                lr = lr_at(
                    step,
                    base_lr=cfg.learning_rate,
                    total_steps=cfg.steps,
                    schedule=cfg.lr_schedule,
                    warmup_steps=cfg.warmup_steps,
                    min_lr_ratio=cfg.min_lr_ratio,
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                step_loss = torch.zeros((), device=device)
                for micro in range(cfg.grad_accumulation_steps):
                    global_batch = cfg.batch_size * world
                    ids = take(n, cfg.seed, state.cursor, global_batch)
                    state.cursor += global_batch
                    mine = range(rank * cfg.batch_size, (rank + 1) * cfg.batch_size)
                    batches = make_batches(
                        [data.samples[ids[j]] for j in mine],
                        list(mine),
                        data,
                        cfg,
                        micro_step=step * cfg.grad_accumulation_steps + micro,
                        device=device,
                        guidance_embed=guidance_embed,
                        latent_scale=latent_scale,
                        latent_shift=latent_shift,
                    )
                    last = micro == cfg.grad_accumulation_steps - 1
                    sync = objective.no_sync() if distributed and not last else _nullcontext()  # type: ignore[operator]
                    with sync:
                        loss = objective(batches) / (cfg.batch_size * cfg.grad_accumulation_steps)
                        loss.backward()
                    step_loss += loss.detach()
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    ordered, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
                )
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if ema:
                    with torch.no_grad():
                        for k, p in params.items():
                            ema[k].lerp_(p.detach(), 1.0 - cfg.ema_decay)
                if distributed:
                    dist.all_reduce(step_loss)
                    step_loss /= world
                state.step += 1
                value = float(step_loss)
                state.losses.append(value)
                smoothed = (
                    value
                    if math.isnan(smoothed)
                    else cfg.loss_smoothing * smoothed + (1 - cfg.loss_smoothing) * value
                )
                eval_loss = None
                if (
                    cfg.eval_every
                    and (state.step % cfg.eval_every == 0 or state.step == cfg.steps)
                    and rank == 0
                ):
                    eval_loss = evaluation_loss(
                        model, holdout, cfg, latent_scale=latent_scale, latent_shift=latent_shift
                    )
                    state.eval_losses.append((state.step, eval_loss))
                if rank == 0 and on_step is not None:
                    on_step(
                        StepReport(state.step, cfg.steps, value, smoothed, lr, float(grad_norm), eval_loss)
                    )
                if (
                    rank == 0
                    and on_validate is not None
                    and cfg.validate_every
                    and state.step % cfg.validate_every == 0
                ):
                    on_validate(state.step, adapters)
                stop = torch.tensor(float(should_stop is not None and should_stop()))
                if distributed:
                    dist.all_reduce(stop)  # every rank stops at the same step
                if stop.item() > 0 and state.step < cfg.steps:
                    stopped = True
                    break
                if cfg.save_every and state.step % cfg.save_every == 0 and state.step < cfg.steps:
                    save(state.step)
        save(state.step)
    finally:
        adapters.detach()
        undo_checkpointing()
    # ---- result ----------------------------------------------------------------------------------
    state.adapters = {k: p.detach().clone() for k, p in params.items()}
    state.ema = {k: v.clone() for k, v in ema.items()}
    state.optimizer = optimizer.state_dict()
    final = _with_ema(adapters, ema)
    lora = adapters_mod.lora_state_dict(final)
    meta = lora_metadata(
        cfg.to_json(),
        steps=state.step,
        algorithm=cfg.algorithm,
        rank=cfg.rank,
        alpha=cfg.alpha,
        extra=metadata,
    )
    for p in final.parameters():
        p.requires_grad_(False)
    return TrainResult(final, lora, meta, state, stopped)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _with_ema(adapters: adapters_mod.AdapterSet, ema: dict[str, Tensor]) -> adapters_mod.AdapterSet:
    """The adapters themselves, or a copy holding the EMA weights."""
    if not ema:
        return adapters
    import copy

    modules = copy.deepcopy(adapters.modules)
    with torch.no_grad():
        for k, p in modules.named_parameters():
            p.copy_(ema[k])
    return adapters_mod.AdapterSet(modules, adapters.names, adapters.algorithm)
