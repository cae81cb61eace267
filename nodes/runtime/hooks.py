"""Torch-side NodeHooks and cache sizing that main.py installs into the executor."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from executor.errors import OutOfMemory
from models.memory import DeviceMemoryError


def value_bytes(value: Any, _depth: int = 0) -> int:
    """Bytes held by tensors inside a node output (tensors, lists, tuples, dicts)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if _depth > 4:
        return 0
    if isinstance(value, (list, tuple)):
        return sum(value_bytes(v, _depth + 1) for v in value)
    if isinstance(value, dict):
        return sum(value_bytes(v, _depth + 1) for v in value.values())
    return 0


def outputs_bytes(outputs: tuple[list[Any], ...]) -> int:
    return sum(value_bytes(slot) for slot in outputs)


class TorchNodeHooks:
    """Runs each node without autograd (training nodes opt back in) and maps device OOM to the engine's OutOfMemory."""

    @contextlib.contextmanager
    def around_node(self, node_id: str, class_type: str) -> Iterator[None]:
        try:
            with torch.no_grad():
                yield
        except torch.OutOfMemoryError as exc:
            if isinstance(exc, DeviceMemoryError):  # the manager's own message already says what to change
                raise OutOfMemory(f"node {node_id} ({class_type}): {exc}") from exc
            raise OutOfMemory(
                f"node {node_id} ({class_type}) ran out of device memory: {exc}. Try a smaller "
                "resolution or batch, a larger --reserve-vram (memory the models leave free), "
                "or close other programs using the device."
            ) from exc
