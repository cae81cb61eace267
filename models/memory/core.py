"""The memory manager's state and bookkeeping: the budget, tracked models, release of dead ones, and
moving single tensors between their master and a (patched) device copy."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from models.patching import edited_tensor, owner_compute_dtype, parts_of

from .device import ComputeDevice, CpuDevice, as_device
from .records import MB, MemoryStats, ModelEntry, StreamPlan, TrackedTensor

# One logger for the whole manager, whichever module logs (users and tests filter on this name).
log = logging.getLogger("models.memory.manager")


class ManagerCore:
    """State, accounting and tensor moves; patching, streaming and placement build on it."""

    def __init__(
        self,
        device: ComputeDevice | torch.device | str = "cpu",
        *,
        offload_device: torch.device | str = "cpu",
        budget_bytes: int | None = None,
        reserve_bytes: int = 0,
        prefetch: bool = True,
        count_working: bool = True,
    ) -> None:
        """`count_working=False` makes the budget a budget for weights alone (benchmarks on a simulated
        device, where activations do not live on it); declared working memory is still recorded."""
        self.compute = as_device(device)
        self.device = self.compute.torch_device
        self.offload_device = torch.device(offload_device)
        self.budget_bytes = budget_bytes  # explicit cap (--vram-limit); None: the device decides
        self.reserve_bytes = reserve_bytes
        self.prefetch = prefetch
        self.count_working = count_working
        self.stats = MemoryStats()
        self._host = CpuDevice()
        self._entries: OrderedDict[int, ModelEntry] = OrderedDict()  # LRU order: oldest first
        self._dead: list[int] = []
        self._lock = threading.RLock()

    # --- accounting -----------------------------------------------------------------------------
    @property
    def resident_bytes(self) -> int:
        """Bytes of weights (and patch adapters) the manager holds on the compute device now."""
        self._reap()
        return sum(e.device_bytes + e.adapter_bytes for e in self._entries.values())

    def budget(self) -> int | None:
        """Bytes models and activations may use now: capacity minus the reserve, capped by the limit."""
        capacity = self.compute.capacity_bytes(self.resident_bytes)
        limits = [
            b
            for b in (self.budget_bytes, None if capacity is None else capacity - self.reserve_bytes)
            if b is not None
        ]
        return max(0, min(limits)) if limits else None

    def is_streamed(self, item: Any) -> bool:
        return any(e is not None and e.streaming for e in self._entries_of(item))

    def is_loaded(self, item: Any) -> bool:
        return all(e is not None and e.loaded for e in self._entries_of(item))

    def tracked(self) -> int:
        """Number of models tracked (released ones excluded)."""
        self._reap()
        return len(self._entries)

    def _entries_of(self, item: Any) -> list[ModelEntry | None]:
        self._reap()
        return [self._live_entry(part.module) for part in parts_of(item)]

    def _live_entry(self, module: nn.Module) -> ModelEntry | None:
        entry = self._entries.get(id(module))
        return entry if entry is not None and entry.module is module else None

    def _account(self) -> None:
        total = sum(e.device_bytes + e.adapter_bytes for e in self._entries.values())
        self.stats.peak_bytes = max(self.stats.peak_bytes, total)

    def reset_stats(self) -> None:
        self.stats = MemoryStats(peak_bytes=self.resident_bytes)

    # --- release of models nothing else holds --------------------------------------------------
    def _on_dead(self, key: int) -> Any:
        def dead(_ref: Any) -> None:
            self._dead.append(key)

        return dead

    def _reap(self) -> None:
        while self._dead:
            key = self._dead.pop()
            entry = self._entries.get(key)
            if entry is not None and entry.module is None:
                del self._entries[key]
                log.debug("released %s (no longer referenced)", entry.label)

    # --- tensors ---------------------------------------------------------------------------------
    @staticmethod
    def _set(record: TrackedTensor, value: torch.Tensor) -> None:
        for owner, attr in record.owners():
            if attr in owner._parameters:
                param = owner._parameters[attr]
                assert param is not None
                param.data = value
            else:
                owner._buffers[attr] = value

    def _device_of(self, entry: ModelEntry) -> ComputeDevice:
        return self._host if entry.on_host else self.compute

    def _bring(self, entry: ModelEntry, keys: Any, *, into: list[torch.Tensor] | None = None) -> None:
        """Put the device copies (patched where the handle says so) of `keys` in place."""
        device = self._device_of(entry)
        for key in keys:
            if key in entry.on_device:
                continue
            record = entry.tensors[key]
            value = device.copy_in(record.master)
            patches = entry.edits.get(key)
            if patches:
                owner = record.owners()[0][0]
                value = edited_tensor(value, patches, owner_compute_dtype(owner, record.master.dtype))
                self.stats.patched_tensors += 1
            self._set(record, value)
            entry.on_device.add(key)
            if not entry.on_host:
                entry.device_bytes += record.size
                self.stats.bytes_moved += record.size
            if into is not None:
                into.append(value)
        self._account()

    def _drop(self, entry: ModelEntry, keys: Any) -> None:
        for key in keys:
            if key not in entry.on_device:
                continue
            record = entry.tensors[key]
            self._set(record, record.master)
            entry.on_device.discard(key)
            if not entry.on_host:
                entry.device_bytes -= record.size

    def _forget_window(self, entry: ModelEntry, plan: StreamPlan) -> None:
        for unit in plan.window.values():
            self._drop(entry, unit.keys)
        plan.window.clear()
        plan.pending.clear()
        plan.in_window = 0

    def _no_fit_message(
        self, entry: ModelEntry, needed: int, room: int, working: int = 0, others: int = 0
    ) -> str:
        budget = self.budget()
        parts = [
            f"{entry.label} needs at least {needed / MB:.1f} MB of device memory even streamed layer by layer"
        ]
        if others:
            parts.append(f", the other models of this step {others / MB:.1f} MB")
        if working:
            parts.append(f", and this step's activations about {working / MB:.1f} MB")
        limit = ""
        if budget is not None:
            cap = (
                f", capped by --vram-limit {self.budget_bytes / MB:.0f} MB"
                if self.budget_bytes is not None
                else ""
            )
            limit = (
                f"; the budget is {budget / MB:.1f} MB (free device memory minus --reserve-vram "
                f"{self.reserve_bytes / MB:.0f} MB{cap})"
            )
        return (
            "".join(parts) + limit + ". Use a smaller resolution or batch, raise --vram-limit or lower "
            "--reserve-vram, or close other programs using the device."
        )
