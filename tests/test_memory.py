"""MemoryManager accounting on a simulated budget (CPU as both devices)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.memory import MemoryManager, module_bytes


class Blocks(nn.Module):
    def __init__(self, width: int = 32, depth: int = 6) -> None:
        super().__init__()
        self.inp = nn.Linear(width, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = torch.tanh(block(x))
        return x


def test_lru_eviction_keeps_the_budget():
    a, b, c = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64)
    size = module_bytes(a)
    memory = MemoryManager(budget_bytes=2 * size)
    with memory.use(a):
        pass
    with memory.use(b):
        pass
    assert memory.resident_bytes == 2 * size
    with memory.use(a):  # a becomes most recent
        pass
    with memory.use(c):  # evicts b, the least recently used
        assert memory.resident_bytes == 2 * size
    assert memory._entries[id(b)].resident == 0 and memory._entries[id(a)].resident == size


def test_locked_models_are_never_evicted_and_big_models_stream():
    torch.manual_seed(0)
    small, big = nn.Linear(32, 32), Blocks()
    x = torch.randn(4, 32)
    expected = big(x)
    budget = module_bytes(small) + module_bytes(big) // 2
    memory = MemoryManager(budget_bytes=budget)
    with memory.use(small):
        with memory.use(big) as (model,):
            assert memory._entries[id(small)].resident  # locked while in use
            assert memory.is_streamed(big) and memory.resident_bytes <= budget
            torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    memory.free_all()
    assert memory.resident_bytes == 0 and not memory.is_streamed(big)


def test_model_without_blocks_that_cannot_fit_raises_clear_oom():
    memory = MemoryManager(budget_bytes=100)
    with pytest.raises(torch.OutOfMemoryError, match="Linear needs"):
        with memory.use(nn.Linear(64, 64)):
            pass
