"""How much device memory a training run needs beside the transformer's weights, and whether it
must checkpoint its blocks to fit a budget.

The estimate (declared as the `working_bytes` of the trainer's `MemoryManager.use`) counts, for one
micro-batch of `batch_size` samples of the largest shape in the data:
- block activations kept for the backward pass: every block's when blocks are not checkpointed;
  with checkpointing only each block's input, plus one block recomputed and differentiated;
- the adapters: parameters, their gradients, the optimizer's state (Adam: two moments), EMA and,
  under DDP, its gradient buckets;
- the latent batch and the per-sample tensors of the objective (noise, noised input, target, loss).
Like the sampling estimates in `models.memory.working` it is a bound with a margin, not a trace.

The plan keeps the user's choice when the model and that memory fit the budget. When they do not,
it turns gradient checkpointing on: that shrinks the activations to a block at a time, and the
memory manager streams the blocks that still do not fit. Streaming needs checkpointing anyway (see
`TrainingMemoryPlan`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from models.memory.units import module_bytes, repeated_block_bytes
from models.memory.working import MARGIN, dtype_bytes

from .adapters import target_modules
from .config import TrainConfig
from .data import Sample

# Tensors alive per token inside one block, in units of the hidden size: norms, modulated inputs,
# q/k/v and their normed/rotated copies, attention output, projections, residuals (~10) and the MLP's
# hidden layer before and after its activation plus the fused single-block output (~3 x mlp_ratio).
PER_TOKEN_HIDDEN = 10.0
PER_TOKEN_MLP = 3.0
# x0, noise, noised input, prediction, target, elementwise loss: fp32 tensors of the latent's size
LATENT_COPIES = 6
OPTIMIZER_STATES = {"AdamW": 2, "Adam": 2, "RMSprop": 1, "SGD": 0}


@dataclass(frozen=True)
class TrainingMemoryPlan:
    """What the trainer declares and how it runs.

    `gradient_checkpointing` is on whenever blocks may stream. A streamed block's weights are on the
    device only between its forward pre-hook and the next block's: without checkpointing, autograd
    would keep references to those weights (the tensors saved for the backward pass) after the
    manager dropped them, so they would stay in device memory unaccounted and the budget would be
    exceeded. With checkpointing nothing of a block is saved but its input; the backward pass
    recomputes the block through its forward, whose pre-hooks bring the weights back in. Layers
    outside the blocks are not checkpointed: of their weights autograd keeps only the final linear
    layer's (the embedders' and modulations' inputs need no gradient), under 1 MB at full size.
    """

    working_bytes: int
    gradient_checkpointing: bool
    reason: str = ""  # why checkpointing was turned on ("" when the configuration is kept)


def adapter_parameter_count(model: nn.Module, config: TrainConfig) -> int:
    """Trainable numbers of the adapters `config` puts on `model` (LoHa has two factor pairs; LoKr is
    counted as a LoRA of the same rank, an upper bound)."""
    layers = dict(model.named_modules())
    total = 0
    for name in target_modules(model, config.targets):
        layer = layers[name]
        assert isinstance(layer, nn.Linear)
        total += config.rank * (layer.in_features + layer.out_features)
    return total * (2 if config.algorithm == "LoHa" else 1)


def training_working_bytes(
    model: nn.Module,
    samples: Sequence[Sample],
    config: TrainConfig,
    *,
    gradient_checkpointing: bool,
    attention_matrix: bool,
) -> int:
    """Device memory of one training micro-batch beside the frozen weights (module doc).

    attention_matrix: the attention scores are materialised (math attention, as on the CPU).
    """
    params = getattr(model, "params", None)
    if params is None or not samples:
        return 0
    largest = max(samples, key=lambda s: s.latent.numel() + s.context.numel())
    _c, h, w = largest.latent.shape
    tokens = math.ceil(h / 2) * math.ceil(w / 2) + int(largest.context.shape[0])
    act = 2 if config.training_dtype == "bf16" else 4  # autocast, else at most fp32
    batch = config.batch_size
    hidden = params.hidden_size
    per_block = batch * tokens * hidden * (PER_TOKEN_HIDDEN + PER_TOKEN_MLP * params.mlp_ratio) * act
    if attention_matrix:  # scores and softmax, both saved for the backward pass
        per_block += 2 * batch * params.num_heads * tokens * tokens * act
    blocks = params.depth + params.depth_single_blocks
    if gradient_checkpointing:  # block inputs, plus one block recomputed and its gradients
        activations = blocks * batch * tokens * hidden * act + 2 * per_block
    else:  # every block's activations, plus the gradients of the block being differentiated
        activations = (blocks + 1) * per_block
    lora_bytes = dtype_bytes(torch.float32 if config.lora_dtype == "fp32" else torch.bfloat16)
    copies = 2 + OPTIMIZER_STATES.get(config.optimizer, 2) + (1 if config.ema_decay > 0 else 0)
    copies += 1 if dist.is_available() and dist.is_initialized() else 0  # DDP's gradient buckets
    adapters = adapter_parameter_count(model, config) * lora_bytes * copies
    latents = LATENT_COPIES * batch * largest.latent.numel() * 4
    return int((activations + adapters + latents) * MARGIN)


def plan_training_memory(
    models: Sequence[nn.Module],
    samples: Sequence[Sample],
    config: TrainConfig,
    *,
    budget: int | None,
    attention_matrix: bool,
) -> TrainingMemoryPlan:
    """Keep `config.gradient_checkpointing` when the models (the trained one first) and the training
    memory fit `budget` (None: unlimited); otherwise checkpoint, and let the manager stream blocks
    (declaring one block's weights more: see below)."""

    def need(checkpointing: bool) -> int:
        return training_working_bytes(
            models[0],
            samples,
            config,
            gradient_checkpointing=checkpointing,
            attention_matrix=attention_matrix,
        )

    weights = sum(module_bytes(m) for m in {id(m): m for m in models}.values())
    configured = need(config.gradient_checkpointing)
    if budget is None or weights + configured <= budget:
        return TrainingMemoryPlan(configured, config.gradient_checkpointing)
    # Blocks may stream: the recompute of a checkpointed block keeps all of that block's weights
    # referenced until its backward ends, also the parts the streaming window already dropped.
    streamed = need(True) + repeated_block_bytes(models[0])
    if config.gradient_checkpointing:
        return TrainingMemoryPlan(streamed, True)
    mb = 1 << 20
    reason = (
        f"the model ({weights / mb:.1f} MB) and training without checkpointing ({configured / mb:.1f} MB) "
        f"exceed the device budget ({budget / mb:.1f} MB)"
    )
    return TrainingMemoryPlan(streamed, True, reason)
