"""Putting models on the compute device for the length of a node's work, through the app's MemoryManager.

Nodes pass handles (MODEL / CLIP / VAE values), so the handle's patches are applied while it is in
use, and declare the activation memory of the step (`*_working_bytes`) so the manager leaves room
for it. A VAE whose activations do not fit beside its weights codes in tiles (`vae_tile`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from models.memory import MemoryManager
from models.memory.working import (
    attention_on_cpu,
    flux_working_bytes,
    text_working_bytes,
    vae_tile_for,
    vae_working_bytes,
)
from models.patching import parts_of
from nodes.runtime.services import Ctx

log = logging.getLogger(__name__)


@contextlib.contextmanager
def use_models(ctx: Ctx, *items: Any, working_bytes: int = 0) -> Iterator[tuple[Any, ...]]:
    """Place `items` (handles or modules) for the duration of the block, locked against eviction.

    Without a memory manager (nodes driven directly, in tests) the models stay where they are; a
    handle's patches are still applied for the block and undone after it.
    """
    memory = ctx.services.memory
    if memory is not None:
        with memory.use(*items, working_bytes=working_bytes) as loaded:
            yield loaded
        return
    if not any(part.patches for item in items for part in parts_of(item)):
        yield items
        return
    local = MemoryManager("cpu")
    try:
        with local.use(*items) as loaded:
            yield loaded
    finally:
        local.free_all()


def compute_device(ctx: Ctx, module: nn.Module) -> torch.device:
    """Where a module's inputs must go: the memory manager's device, else the module's own."""
    memory = ctx.services.memory
    if memory is not None:
        return memory.device
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def _device(ctx: Ctx) -> torch.device:
    memory = ctx.services.memory
    return memory.device if memory is not None else torch.device("cpu")


def flux_step_working_bytes(ctx: Ctx, model: Any, samples: torch.Tensor, conditionings: Sequence[Any]) -> int:
    """Activations of one transformer call for LATENT `samples` [B, C, h, w] and the conditionings in play.

    Every present conditioning is counted as a batch half (CFG runs them together); context
    tokens are the longest T5 sequence among them.
    """
    present = [c for c in conditionings if c]
    tokens = max(
        (int(entry[0].shape[1]) for c in present for entry in c if hasattr(entry[0], "shape")), default=512
    )
    batch = int(samples.shape[0]) * max(1, len(present))
    height, width = int(samples.shape[-2]) * 8, int(samples.shape[-1]) * 8
    dtype = getattr(getattr(model, "options", None), "compute_dtype", torch.bfloat16)
    return flux_working_bytes(
        model.params,
        batch=batch,
        height=height,
        width=width,
        context_tokens=tokens,
        dtype=dtype,
        attention_matrix=attention_on_cpu(_device(ctx)),
    )


def _config_int(config: Any, *names: str) -> int:
    """The first of `names` a transformers config has (CLIP and T5 name the same sizes differently)."""
    for name in names:
        value = getattr(config, name, None)
        if value:
            return int(value)
    return 0


def text_encoders_working_bytes(clip: Any, tokens: int = 256) -> int:
    """Activations of encoding one prompt with the CLIP handle's encoders (the larger of the two)."""
    sizes = [0]
    for name, length in (("clip", 77), ("t5", tokens)):
        module = getattr(clip.encoders, name, None)
        config = getattr(module, "config", None)
        if config is None:
            continue
        hidden = _config_int(config, "hidden_size", "d_model")
        ff = _config_int(config, "intermediate_size", "d_ff")
        heads = max(1, _config_int(config, "num_attention_heads", "num_heads"))
        sizes.append(text_working_bytes(hidden=hidden, ff=ff, heads=heads, tokens=length, batch=2))
    return max(sizes)


def vae_tile(
    ctx: Ctx, vae: Any, batch: int, height: int, width: int, *, decode: bool, tile: int | None, overlap: int
) -> tuple[int | None, int, int]:
    """(tile in pixels or None, overlap, working bytes) for coding `batch` images of `height` x `width`.

    An explicit `tile` is kept. Otherwise, when the activations of a one-piece pass do not fit
    beside the VAE at its smallest footprint, the largest tile that fits is chosen (overlap at most
    a quarter of it) and logged.
    """
    memory = ctx.services.memory
    attention = attention_on_cpu(_device(ctx))
    dtype = getattr(vae, "compute_dtype", torch.float32)

    def need(h: int, w: int) -> int:
        return vae_working_bytes(
            vae.params, batch=batch, height=h, width=w, decode=decode, dtype=dtype, attention_matrix=attention
        )

    if tile is not None or memory is None:
        return tile, overlap, need(min(tile or height, height), min(tile or width, width))
    room = memory.room_for_work(vae)
    if room is None:
        return None, overlap, need(height, width)
    chosen = vae_tile_for(
        vae.params,
        room=room,
        batch=batch,
        height=height,
        width=width,
        decode=decode,
        dtype=dtype,
        attention_matrix=attention,
    )
    if chosen is None:
        return None, overlap, need(height, width)
    log.info(
        "VAE %s of %dx%d does not fit in %.1f MB of device memory: %s in %d px tiles",
        "decode" if decode else "encode",
        width,
        height,
        max(room, 0) / 2**20,
        "decoding" if decode else "encoding",
        chosen,
    )
    return chosen, min(overlap, chosen // 4), need(min(chosen, height), min(chosen, width))
