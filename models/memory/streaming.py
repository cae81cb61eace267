"""Streaming a model that does not fit: the plan (which units stay resident, which stream), the
forward pre-hooks that bring a unit in, and the two-unit window with prefetch of the learned next unit."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .core import log
from .patch_application import PatchApplication
from .records import MB, DeviceMemoryError, ModelEntry, StreamPlan
from .units import Partition, Unit, partition, repeated_block_bytes


class StreamingPlacement(PatchApplication):
    """Plans and runs streaming; built on patch application because a model that starts streaming
    installs its adapters."""

    def _plan(self, entry: ModelEntry, room: int) -> StreamPlan:
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
    def _fill(split: Partition, room: int, window: int, prefetch: bool) -> StreamPlan:
        free = room - split.fixed_bytes - window
        streamed: list[Unit] = []
        resident = 0
        for unit in split.units:
            if unit.size <= free:
                free -= unit.size
                resident += 1
            else:  # the plan keeps keys, not modules: it must not keep the model alive
                streamed.append(Unit(None, unit.keys, unit.size, unit.index))
        plan = StreamPlan(streamed, window, resident, room - free, prefetch and len(streamed) > 1)
        plan.by_index = {unit.index: unit for unit in streamed}
        for unit in streamed:
            for key in unit.keys:
                plan.unit_of_key[key] = unit
        for a, b in zip(streamed, streamed[1:]):
            plan.next_of[a.index] = b.index
        return plan

    def _start_streaming(self, entry: ModelEntry, plan: StreamPlan) -> None:
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

    def _stop_streaming(self, entry: ModelEntry) -> None:
        plan = entry.plan
        if plan is None:
            return
        for hook in plan.hooks:
            hook.remove()
        plan.hooks.clear()
        self._forget_window(entry, plan)

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

    def _make_room(self, entry: ModelEntry, plan: StreamPlan, size: int, *, keep: int) -> None:
        for index in list(plan.window):
            if plan.in_window + size <= plan.window_bytes:
                return
            if index == keep:
                continue
            unit = plan.window.pop(index)
            plan.pending.pop(index, None)
            self._drop(entry, unit.keys)
            plan.in_window -= unit.size


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
