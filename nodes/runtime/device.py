"""Putting models on the compute device for the length of a node's work, through the app's MemoryManager."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from nodes.runtime.services import Ctx


@contextlib.contextmanager
def use_models(ctx: Ctx, *modules: nn.Module, working_bytes: int = 0) -> Iterator[tuple[nn.Module, ...]]:
    """Load `modules` for the duration of the block (locked against eviction), via `ctx.services.memory`.

    Without a memory manager (tests calling nodes directly) the modules stay where they are.
    """
    memory = ctx.services.memory
    if memory is None:
        yield modules
        return
    with memory.use(*modules, working_bytes=working_bytes) as loaded:
        yield loaded


def compute_device(ctx: Ctx, module: nn.Module) -> torch.device:
    """Where a module's inputs must go: the memory manager's device, else the module's own."""
    memory = ctx.services.memory
    if memory is not None:
        return memory.device
    return next((p.device for p in module.parameters()), torch.device("cpu"))

