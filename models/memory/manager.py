"""MemoryManager: which weights live on the compute device, under a budget it works out by itself.

A caller asks for everything one step needs at once (`with memory.use(handle, vae, working_bytes=n)`),
declaring the activation memory of the step beside the weights. The budget is the device's capacity
(free memory plus what the manager holds) minus a reserve, capped by an explicit limit
(`--vram-limit`). Models in use are locked; to make room the manager offloads the least recently
used unlocked models. A model that still does not fit keeps as many units resident as fit and
streams the rest: a forward pre-hook on each layer of a streamed unit brings the unit in, the unit
that ran before it (as learned on earlier passes) tells which one to prefetch next, and a window of
two units (the running one and the prefetched one) bounds what streams through the device.

Every tensor's base value ("master") stays on the offload device, unmodified. Moving a tensor in
copies the master (on a CPU device: the master itself) and applies the handle's patches to the
copy; moving it out or undoing patches puts the master back, so undo is exact. Models are tracked
through weak references: a model nothing else holds (the executor's cache dropped it) is released.

Layers (each builds on the one before): records (per-model state), core (budget, accounting, tensor
moves), patch_application (weight edits and adapters), streaming (plan, hooks, window), and here the
placement policy and the public API.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn

from models.patching import Part, parts_of

from .core import log
from .records import MB, DeviceMemoryError, MemoryStats, ModelEntry
from .streaming import StreamingPlacement
from .units import module_bytes, partition

__all__ = ["DeviceMemoryError", "MemoryManager", "MemoryStats"]


class MemoryManager(StreamingPlacement):
    """Moves models (or, when they don't fit, units of them) between the offload and compute device."""

    def _offload(self, entry: ModelEntry) -> None:
        self._stop_streaming(entry)
        self._remove_adapters(entry)
        self._drop(entry, list(entry.on_device))
        entry.loaded = False
        entry.plan = None
        log.debug("offloaded %s (%.1f MB)", entry.label, entry.size / MB)

    def _load_fully(self, entry: ModelEntry) -> None:
        if entry.plan is not None:
            self._stop_streaming(entry)
            entry.plan = None
        self._bring(entry, list(entry.tensors))
        if not entry.loaded:
            entry.loaded = True
            self.stats.loads += 1
            self._install_adapters(entry, entry.bypassed)

    def _free(self, needed: int, budget: int) -> None:
        """Offload unlocked models, least recently used first, until `needed` more bytes fit."""
        for entry in list(self._entries.values()):
            if self.resident_bytes + needed <= budget:
                return
            if entry.locks == 0 and entry.loaded and not entry.on_host:
                self._offload(entry)

    def _place(self, entries: list[ModelEntry], working_bytes: int) -> None:
        for entry in entries:
            if entry.on_host and len(entry.on_device) < len(entry.tensors):
                self._load_fully(entry)
        device_entries = [e for e in entries if not e.on_host]
        budget = self.budget()
        if budget is None:
            for entry in device_entries:
                if entry.streaming or not entry.loaded or len(entry.on_device) < len(entry.tensors):
                    self._load_fully(entry)
            return
        mine = {id(e) for e in device_entries}
        wanted = sum(e.size - e.device_bytes for e in device_entries)
        self._free(wanted + working_bytes, budget)
        others = sum(e.device_bytes + e.adapter_bytes for e in self._entries.values() if id(e) not in mine)
        room = budget - working_bytes - others
        minimum = sum(e.min_footprint() + e.adapter_estimate for e in device_entries)
        if minimum > room:
            big = max(device_entries, key=lambda e: e.min_footprint())
            raise DeviceMemoryError(
                self._no_fit_message(
                    big, big.min_footprint(), room, working_bytes, minimum - big.min_footprint()
                )
            )
        ordered = sorted(device_entries, key=lambda e: e.size)
        for i, entry in enumerate(ordered):
            later = sum(e.min_footprint() for e in ordered[i + 1 :])
            avail = room - later - entry.adapter_estimate
            if entry.size <= avail:
                if entry.streaming or len(entry.on_device) < len(entry.tensors):
                    self._load_fully(entry)
                room -= entry.size + entry.adapter_estimate
                continue
            if entry.plan is not None and entry.streaming and entry.plan.footprint <= avail:
                room -= entry.plan.footprint + entry.adapter_estimate
                continue
            if entry.loaded:
                self._offload(entry)
            plan = self._plan(entry, avail)
            self._start_streaming(entry, plan)
            room -= plan.footprint + entry.adapter_estimate

    @contextlib.contextmanager
    def use(self, *items: Any, working_bytes: int = 0) -> Iterator[tuple[Any, ...]]:
        """Place `items` (handles or modules) on the device, patched, locked while inside; yields them."""
        parts = [part for item in items for part in parts_of(item)]
        with self._lock:
            self._reap()
            self.stats.max_working_bytes = max(self.stats.max_working_bytes, working_bytes)
            if not self.count_working:
                working_bytes = 0
            entries: list[ModelEntry] = []
            try:
                for part in parts:
                    entry = self._entry_for(part)
                    entry.locks += 1
                    entries.append(entry)
                    self._set_patches(entry, part)
                self._place(entries, working_bytes)
            except BaseException:
                for entry in entries:
                    entry.locks -= 1
                raise
        try:
            yield items
        finally:
            with self._lock:
                for entry in entries:
                    entry.locks -= 1

    def _entry_for(self, part: Part) -> ModelEntry:
        key = id(part.module)
        entry = self._entries.pop(key, None)
        if entry is None or entry.module is not part.module:
            entry = ModelEntry(part.module, part, self._on_dead(key))
        entry.on_host = part.on_host if not entry.loaded else entry.on_host
        self._entries[key] = entry  # most recently used goes last
        return entry

    def room_for_work(self, *items: Any) -> int | None:
        """Bytes left for activations once `items` sit at their smallest footprint; None: unlimited."""
        with self._lock:
            budget = self.budget()
            if budget is None or not self.count_working:
                return None
            entries = [
                e
                for e in (self._live_entry(p.module) for item in items for p in parts_of(item))
                if e is not None and not e.on_host
            ]
            known = {id(e.module) for e in entries}
            fresh = [
                p for item in items for p in parts_of(item) if id(p.module) not in known and not p.on_host
            ]
            minimum = sum(e.min_footprint() for e in entries)
            minimum += sum(min(module_bytes(p.module), _min_bytes(p.module)) for p in fresh)
            locked = sum(
                e.device_bytes + e.adapter_bytes
                for e in self._entries.values()
                if e.locks and id(e.module) not in known
            )
            return budget - minimum - locked

    def forget(self, item: Any) -> None:
        """Stop tracking a model (offloaded, patches undone)."""
        with self._lock:
            for part in parts_of(item):
                entry = self._live_entry(part.module)
                if entry is not None and entry.locks == 0:
                    self._offload(entry)
                    del self._entries[id(part.module)]

    def free_all(self) -> None:
        """Offload every model not in use (ComfyUI's /free unload_models) and empty the device cache."""
        with self._lock:
            self._reap()
            for entry in list(self._entries.values()):
                if entry.locks == 0 and entry.loaded:
                    self._offload(entry)
            self.compute.empty_cache()

    def hook_count(self, item: Any) -> int:
        """Streaming pre-hooks installed for `item` (tests: re-entering must not add more)."""
        return sum(len(e.plan.hooks) for e in self._entries_of(item) if e is not None and e.plan is not None)


def _min_bytes(module: nn.Module) -> int:
    split = partition(module, 0)
    return split.fixed_bytes + split.largest
