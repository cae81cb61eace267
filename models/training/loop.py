"""The training loop: one function, top to bottom (setup, resume, steps, saves, teardown). What one
step computes (batches, the objective, the evaluation loss) is in `step`.

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

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

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
from .data import Sample, TrainingData, take
from .export import to_key_style
from .schedule import lr_at
from .step import FLUX_LATENT_SCALE, FLUX_LATENT_SHIFT, Objective, evaluation_loss, make_batches

log = logging.getLogger(__name__)


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
    objective: nn.Module = Objective(adapters.modules, model, cfg)
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
