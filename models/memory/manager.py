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
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from models.patches import WeightPatch
from models.patching import (
    LinearAdapter,
    Part,
    PatchTargetError,
    adapter_for,
    can_bypass,
    edited_tensor,
    group_patches,
    owner_compute_dtype,
    parts_of,
)

from .device import ComputeDevice, CpuDevice, as_device
from .units import Partition, Unit, module_bytes, named_tensors, partition, repeated_block_bytes, tensor_bytes

log = logging.getLogger(__name__)
MB = 1 << 20


class DeviceMemoryError(torch.OutOfMemoryError):
    """A model (or a step's activations) cannot fit the device budget even streamed layer by layer."""


@dataclass
class MemoryStats:
    """Counters for benchmarks and tests (bytes are what moved to / sat on the compute device)."""

    bytes_moved: int = 0
    peak_bytes: int = 0
    loads: int = 0  # models placed on the device (fully or as a streaming plan)
    patched_tensors: int = 0  # weight edits computed
    max_working_bytes: int = 0  # the largest activation memory a use declared


@dataclass(eq=False)
class _Tensor:
    """One tensor of a model: where it lives on the module (all aliases) and its base value."""

    key: str
    locations: list[tuple[weakref.ref[nn.Module], str]]  # weak: the manager must not keep a model alive
    master: torch.Tensor
    size: int

    def owners(self) -> list[tuple[nn.Module, str]]:
        found = [(ref(), attr) for ref, attr in self.locations]
        return [(owner, attr) for owner, attr in found if owner is not None]


@dataclass(eq=False)
class _Plan:
    """How a model sits on the device: everything, or fixed + resident units + a streaming window."""

    streamed: list[Unit]
    window_bytes: int  # capacity of the window (largest unit, twice with prefetch)
    resident_units: int
    footprint: int  # bytes the plan may occupy at most
    prefetch: bool
    unit_of_key: dict[str, Unit] = field(default_factory=dict)
    window: OrderedDict[int, Unit] = field(default_factory=OrderedDict)  # unit index -> unit, oldest first
    in_window: int = 0
    next_of: dict[int, int] = field(default_factory=dict)
    last: int | None = None
    pending: dict[int, tuple[Any, list[torch.Tensor]]] = field(
        default_factory=dict
    )  # index -> (marker, copies)
    by_index: dict[int, Unit] = field(default_factory=dict)
    hooks: list[torch.utils.hooks.RemovableHandle] = field(default_factory=list)


class _Entry:
    def __init__(self, module: nn.Module, part: Part, on_dead: Any) -> None:
        self.ref = weakref.ref(module, on_dead)
        self.label = part.label or type(module).__name__
        self.on_host = part.on_host
        self.tensors: dict[str, _Tensor] = {}
        self.alias: dict[str, str] = {}
        self.keys_of_owner: dict[int, list[str]] = {}  # id(module) -> canonical keys of its own tensors
        by_id: dict[int, _Tensor] = {}
        for name, owner, attr, t in named_tensors(module):
            record = by_id.get(id(t))
            if record is None:
                record = by_id[id(t)] = self.tensors[name] = _Tensor(name, [], t.detach(), tensor_bytes(t))
            record.locations.append((weakref.ref(owner), attr))
            self.alias[name] = record.key
            self.keys_of_owner.setdefault(id(owner), []).append(record.key)
        self.size = sum(t.size for t in self.tensors.values())
        self.locks = 0
        self.loaded = False
        self.on_device: set[str] = set()  # keys whose device copy is in place
        self.device_bytes = 0
        self.plan: _Plan | None = None
        self.patches: tuple[WeightPatch, ...] = ()
        self.bypass = False
        self.edits: dict[str, tuple[WeightPatch, ...]] = {}  # key -> patches applied as weight edits
        self.bypassed: dict[str, tuple[WeightPatch, ...]] = {}  # key -> patches run as adapters
        self.adapters: list[torch.utils.hooks.RemovableHandle] = []
        self.adapter_bytes = 0
        self.adapter_estimate = 0
        self._min_footprint: int | None = None

    @property
    def module(self) -> nn.Module | None:
        return self.ref()

    def min_footprint(self) -> int:
        """Bytes the model needs at the least: what never streams plus its largest layer."""
        if self._min_footprint is None:
            module = self.module
            if module is None:
                return 0
            split = partition(module, 0)
            self._min_footprint = min(self.size, split.fixed_bytes + split.largest)
        return self._min_footprint

    @property
    def streaming(self) -> bool:
        return self.plan is not None and bool(self.plan.streamed)


class MemoryManager:
    """Moves models (or, when they don't fit, units of them) between the offload and compute device."""

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
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # LRU order: oldest first
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

    def _entries_of(self, item: Any) -> list[_Entry | None]:
        self._reap()
        return [self._live_entry(part.module) for part in parts_of(item)]

    def _live_entry(self, module: nn.Module) -> _Entry | None:
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
    def _set(record: _Tensor, value: torch.Tensor) -> None:
        for owner, attr in record.owners():
            if attr in owner._parameters:
                param = owner._parameters[attr]
                assert param is not None
                param.data = value
            else:
                owner._buffers[attr] = value

    def _device_of(self, entry: _Entry) -> ComputeDevice:
        return self._host if entry.on_host else self.compute

    def _bring(self, entry: _Entry, keys: Any, *, into: list[torch.Tensor] | None = None) -> None:
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

    def _drop(self, entry: _Entry, keys: Any) -> None:
        for key in keys:
            if key not in entry.on_device:
                continue
            record = entry.tensors[key]
            self._set(record, record.master)
            entry.on_device.discard(key)
            if not entry.on_host:
                entry.device_bytes -= record.size

    # --- patches ---------------------------------------------------------------------------------
    def _set_patches(self, entry: _Entry, part: Part) -> None:
        if patch_signature(part.patches) == patch_signature(entry.patches) and part.bypass == entry.bypass:
            return
        if entry.locks > 1:
            raise RuntimeError(
                f"{entry.label} is already in use with other patches; use one handle of a model at a time"
            )
        module = entry.module
        assert module is not None
        grouped: dict[str, tuple[WeightPatch, ...]] = {}
        for key, patches in group_patches(part.patches).items():
            if key not in entry.alias:
                raise PatchTargetError(
                    f"{entry.label} has no tensor {key!r} (patch from {patches[0].source or '?'})"
                )
            grouped[entry.alias[key]] = grouped.get(entry.alias[key], ()) + patches
        edits: dict[str, tuple[WeightPatch, ...]] = {}
        bypassed: dict[str, tuple[WeightPatch, ...]] = {}
        for key, patches in grouped.items():
            record = entry.tensors[key]
            owner, attr = record.owners()[0]
            wants_bypass = part.bypass or any(
                is_fp8_tensor(entry.tensors[k].master) for k in entry.keys_of_owner.get(id(owner), ())
            )
            if wants_bypass and can_bypass(owner, attr, patches):
                bypassed[key] = patches
            else:
                edits[key] = patches
        changed = set(edits) | set(entry.edits)
        changed = {k for k in changed if edits.get(k) != entry.edits.get(k)}
        self._remove_adapters(entry)
        stale = changed & entry.on_device
        self._drop(entry, stale)
        entry.edits = edits
        entry.patches, entry.bypass = part.patches, part.bypass
        if entry.plan is not None:
            self._forget_window(entry, entry.plan)
            resident = {k for k in stale if entry.plan.unit_of_key.get(k) is None}
            self._bring(entry, resident)
        if entry.loaded:
            self._install_adapters(entry, bypassed)
        entry.bypassed = bypassed
        entry.adapter_estimate = sum(entry.tensors[k].master.numel() * 4 for k in bypassed)  # float32 deltas
        if part.patches:
            log.info(
                "%s: %d patched tensors (%d as weight edits, %d as forward-time adapters)",
                entry.label,
                len(grouped),
                len(edits),
                len(bypassed),
            )

    def _install_adapters(self, entry: _Entry, bypassed: dict[str, tuple[WeightPatch, ...]]) -> None:
        by_owner: dict[int, tuple[nn.Module, dict[str, tuple[WeightPatch, ...]]]] = {}
        for key, patches in bypassed.items():
            owner, attr = entry.tensors[key].owners()[0]
            by_owner.setdefault(id(owner), (owner, {}))[1][attr] = patches
        device = self._device_of(entry).torch_device
        for owner, attrs in by_owner.values():
            assert isinstance(owner, nn.Linear)
            prefix = _key_prefix(entry, owner)  # the owner's name, as its tensors spell it
            weight = entry.tensors[entry.alias[prefix + "weight"]].master
            bias_key = entry.alias.get(prefix + "bias")
            bias = entry.tensors[bias_key].master if bias_key else None
            adapter: LinearAdapter = adapter_for(
                owner, attrs.get("weight", ()), attrs.get("bias", ()), weight, bias, device
            )
            entry.adapters.append(owner.register_forward_hook(adapter))
            if not entry.on_host:
                entry.adapter_bytes += adapter.nbytes
        self._account()

    def _remove_adapters(self, entry: _Entry) -> None:
        for hook in entry.adapters:
            hook.remove()
        entry.adapters.clear()
        entry.adapter_bytes = 0

    # --- placing -------------------------------------------------------------------------------
    def _offload(self, entry: _Entry) -> None:
        self._stop_streaming(entry)
        self._remove_adapters(entry)
        self._drop(entry, list(entry.on_device))
        entry.loaded = False
        entry.plan = None
        log.debug("offloaded %s (%.1f MB)", entry.label, entry.size / MB)

    def _load_fully(self, entry: _Entry) -> None:
        if entry.plan is not None:
            self._stop_streaming(entry)
            entry.plan = None
        self._bring(entry, list(entry.tensors))
        if not entry.loaded:
            entry.loaded = True
            self.stats.loads += 1
            self._install_adapters(entry, entry.bypassed)

    def _plan(self, entry: _Entry, room: int) -> _Plan:
        module = entry.module
        assert module is not None
        natural = repeated_block_bytes(module) or entry.size // 8
        tries = [min(natural, room // 4), room // 8, 0]
        for prefetch in (True, False) if self.prefetch else (False,):
            for max_unit in tries:
                split = partition(module, max(0, max_unit))
                window = split.largest * (2 if prefetch else 1)
                if split.fixed_bytes + window <= room:
                    return self._fill(split, room, window, prefetch)
        split = partition(module, 0)
        raise DeviceMemoryError(self._no_fit_message(entry, split.fixed_bytes + split.largest, room))

    @staticmethod
    def _fill(split: Partition, room: int, window: int, prefetch: bool) -> _Plan:
        free = room - split.fixed_bytes - window
        streamed: list[Unit] = []
        resident = 0
        for unit in split.units:
            if unit.size <= free:
                free -= unit.size
                resident += 1
            else:  # the plan keeps keys, not modules: it must not keep the model alive
                streamed.append(Unit(None, unit.keys, unit.size, unit.index))
        plan = _Plan(streamed, window, resident, room - free, prefetch and len(streamed) > 1)
        plan.by_index = {unit.index: unit for unit in streamed}
        for unit in streamed:
            for key in unit.keys:
                plan.unit_of_key[key] = unit
        for a, b in zip(streamed, streamed[1:]):
            plan.next_of[a.index] = b.index
        return plan

    def _start_streaming(self, entry: _Entry, plan: _Plan) -> None:
        if entry.plan is not None:
            self._stop_streaming(entry)
        self._drop(entry, [k for k in entry.on_device if k in plan.unit_of_key])
        entry.plan = plan
        device = self._device_of(entry)
        for unit in plan.streamed:
            for key in unit.keys:  # the host copy that streams (pinned on CUDA)
                record = entry.tensors[key]
                prepared = device.prepare_host(record.master)
                if prepared is not record.master:
                    record.master = prepared
                    self._set(record, prepared)
        self._bring(entry, [k for k in entry.tensors if k not in plan.unit_of_key])
        for unit in plan.streamed:
            hook = self._stream_hook(id(entry.module), unit.index, device.torch_device)
            owners = {id(o): o for k in unit.keys for o, _ in entry.tensors[k].owners()}
            for owner in owners.values():
                plan.hooks.append(owner.register_forward_pre_hook(hook, with_kwargs=True))
        if not entry.loaded:
            entry.loaded = True
            self.stats.loads += 1
            self._install_adapters(entry, entry.bypassed)
        log.info(
            "%s streams %d of %d units (%.1f MB resident of %.1f MB, %.1f MB window%s)",
            entry.label,
            len(plan.streamed),
            len(plan.streamed) + plan.resident_units,
            entry.device_bytes / MB,
            entry.size / MB,
            plan.window_bytes / MB,
            ", prefetching" if plan.prefetch else "",
        )

    def _stop_streaming(self, entry: _Entry) -> None:
        plan = entry.plan
        if plan is None:
            return
        for hook in plan.hooks:
            hook.remove()
        plan.hooks.clear()
        self._forget_window(entry, plan)

    def _forget_window(self, entry: _Entry, plan: _Plan) -> None:
        for unit in plan.window.values():
            self._drop(entry, unit.keys)
        plan.window.clear()
        plan.pending.clear()
        plan.in_window = 0

    def _stream_hook(self, key: int, index: int, device: torch.device) -> Any:
        """The pre-hook of a streamed unit's layers: bring the unit in; on a separate device, also the
        layer's tensor inputs (a streamed embedding gets token ids from code that looked at where the
        model's first weight was)."""
        if device.type == "cpu":

            def pre_hook(_module: nn.Module, _args: Any, _kwargs: Any) -> None:
                self._enter_unit(key, index)

            return pre_hook

        def moving_pre_hook(_module: nn.Module, args: Any, kwargs: Any) -> tuple[Any, Any]:
            self._enter_unit(key, index)
            return _to_device(args, device), _to_device(kwargs, device)

        return moving_pre_hook

    def _enter_unit(self, key: int, index: int) -> None:
        entry = self._entries.get(key)
        if entry is None or entry.plan is None:
            return
        plan = entry.plan
        units = plan.by_index
        if plan.last is not None and plan.last != index:
            plan.next_of[plan.last] = index
        plan.last = index
        unit = units[index]
        if index in plan.window:
            pending = plan.pending.pop(index, None)
            if pending is not None:
                self._device_of(entry).wait(*pending)
            plan.window.move_to_end(index)
        else:
            self._make_room(entry, plan, unit.size, keep=index)
            self._bring(entry, unit.keys)
            plan.window[index] = unit
            plan.in_window += unit.size
        if not plan.prefetch:
            return
        following = plan.next_of.get(index)
        if following is None or following in plan.window:
            return
        nxt = units[following]
        if plan.in_window + nxt.size > plan.window_bytes:
            self._make_room(entry, plan, nxt.size, keep=index)
        if plan.in_window + nxt.size > plan.window_bytes:
            return
        device = self._device_of(entry)
        copies: list[torch.Tensor] = []
        with device.prefetch_context():
            self._bring(entry, nxt.keys, into=copies)
            plan.pending[following] = (device.prefetch_done(), copies)
        plan.window[following] = nxt
        plan.in_window += nxt.size

    def _make_room(self, entry: _Entry, plan: _Plan, size: int, *, keep: int) -> None:
        for index in list(plan.window):
            if plan.in_window + size <= plan.window_bytes:
                return
            if index == keep:
                continue
            unit = plan.window.pop(index)
            plan.pending.pop(index, None)
            self._drop(entry, unit.keys)
            plan.in_window -= unit.size

    def _free(self, needed: int, budget: int) -> None:
        """Offload unlocked models, least recently used first, until `needed` more bytes fit."""
        for entry in list(self._entries.values()):
            if self.resident_bytes + needed <= budget:
                return
            if entry.locks == 0 and entry.loaded and not entry.on_host:
                self._offload(entry)

    def _place(self, entries: list[_Entry], working_bytes: int) -> None:
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

    def _no_fit_message(
        self, entry: _Entry, needed: int, room: int, working: int = 0, others: int = 0
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

    @contextlib.contextmanager
    def use(self, *items: Any, working_bytes: int = 0) -> Iterator[tuple[Any, ...]]:
        """Place `items` (handles or modules) on the device, patched, locked while inside; yields them."""
        parts = [part for item in items for part in parts_of(item)]
        with self._lock:
            self._reap()
            self.stats.max_working_bytes = max(self.stats.max_working_bytes, working_bytes)
            if not self.count_working:
                working_bytes = 0
            entries: list[_Entry] = []
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

    def _entry_for(self, part: Part) -> _Entry:
        key = id(part.module)
        entry = self._entries.pop(key, None)
        if entry is None or entry.module is not part.module:
            entry = _Entry(part.module, part, self._on_dead(key))
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


def is_fp8_tensor(t: torch.Tensor) -> bool:
    return t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)


def _key_prefix(entry: _Entry, owner: nn.Module) -> str:
    for key in entry.keys_of_owner.get(id(owner), ()):
        for o, attr in entry.tensors[key].owners():
            if o is owner and key.endswith(attr):
                return key[: len(key) - len(attr)]
    return ""


def patch_signature(patches: tuple[WeightPatch, ...]) -> tuple[Any, ...]:
    """What makes two patch tuples act the same (CLIP parts re-key patches into new objects)."""
    return tuple(
        (
            p.key,
            p.kind,
            p.strength,
            p.alpha,
            p.base_strength,
            p.offset,
            p.reshape,
            p.slots,
            tuple(map(id, p.tensors)),
            patch_signature(p.inner),
        )
        for p in patches
    )


def _to_device(value: Any, device: torch.device) -> Any:
    """Tensors inside args/kwargs (tuples, lists, dicts one level deep) moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device, non_blocking=True)
    if isinstance(value, tuple):
        return tuple(_to_device(v, device) for v in value)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value
