"""MemoryManager: which models live on the compute device, under an explicit byte budget.

A caller asks for everything one step needs at once (`with memory.use(transformer, vae): ...`).
Models in use are locked; to make room the manager offloads the least recently used unlocked
models. A model too big for the budget keeps as many of its blocks resident as fit and streams the
others through the device one block at a time (moved in before the block runs, out after).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger(__name__)


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers in their current dtypes."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def streamable_blocks(module: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a model (the children of its ModuleLists), in execution order."""
    blocks: list[nn.Module] = []
    for child in module.children():
        if isinstance(child, nn.ModuleList):
            blocks.extend(child)
    return blocks


@dataclass
class _Entry:
    module: nn.Module
    size: int
    locks: int = 0
    resident: int = 0  # bytes of this model currently on the compute device
    streamed: list[nn.Module] = field(default_factory=list)
    hooks: list[torch.utils.hooks.RemovableHandle] = field(default_factory=list)


class MemoryManager:
    """Moves whole models (or, when they don't fit, blocks of them) between offload and compute device."""

    def __init__(self, device: torch.device | str = "cpu", *, offload_device: torch.device | str = "cpu",
                 budget_bytes: int | None = None) -> None:
        self.device = torch.device(device)
        self.offload_device = torch.device(offload_device)
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # LRU order: oldest first
        self._lock = threading.RLock()

    # --- accounting -----------------------------------------------------------------------------
    @property
    def resident_bytes(self) -> int:
        return sum(e.resident for e in self._entries.values())

    def is_streamed(self, module: nn.Module) -> bool:
        entry = self._entries.get(id(module))
        return bool(entry and entry.streamed)

    def _free(self, needed: int) -> None:
        """Offload unlocked models, least recently used first, until `needed` bytes fit."""
        if self.budget_bytes is None:
            return
        for key in list(self._entries):
            if self.resident_bytes + needed <= self.budget_bytes:
                return
            entry = self._entries[key]
            if entry.locks == 0 and entry.resident:
                self._offload(entry)

    def _offload(self, entry: _Entry) -> None:
        self._stop_streaming(entry)
        entry.module.to(self.offload_device)
        entry.resident = 0
        log.debug("offloaded %s (%.1f MB)", type(entry.module).__name__, entry.size / 2**20)

    # --- loading --------------------------------------------------------------------------------
    def _load(self, entry: _Entry, working_bytes: int) -> None:
        if entry.resident == entry.size:
            return
        self._free(entry.size + working_bytes)
        room = None if self.budget_bytes is None else self.budget_bytes - self.resident_bytes - working_bytes
        if room is None or room >= entry.size:
            entry.module.to(self.device)
            entry.resident = entry.size
            return
        self._load_partially(entry, max(room, 0))

    def _load_partially(self, entry: _Entry, room: int) -> None:
        blocks = streamable_blocks(entry.module)
        if not blocks or any(True for _ in entry.module.parameters(recurse=False)):
            raise torch.OutOfMemoryError(
                f"{type(entry.module).__name__} needs {entry.size / 2**20:.0f} MB but only {room / 2**20:.0f} MB of "
                "the VRAM budget is free, and it cannot be streamed block by block")
        # Everything outside the blocks (embeddings, final layers) must be resident.
        fixed = [m for m in entry.module.children() if not isinstance(m, nn.ModuleList)]
        for m in fixed:
            m.to(self.device)
        resident = sum(module_bytes(m) for m in fixed)
        for block in blocks:
            size = module_bytes(block)
            if resident + size <= room and not entry.streamed:
                block.to(self.device)
                resident += size
            else:
                block.to(self.offload_device)
                entry.streamed.append(block)
        entry.resident = resident
        for block in entry.streamed:
            entry.hooks.append(block.register_forward_pre_hook(self._bring_in))
            entry.hooks.append(block.register_forward_hook(self._send_out))
        log.info("%s streams %d of %d blocks (%.0f MB resident of %.0f MB)", type(entry.module).__name__,
                 len(entry.streamed), len(blocks), resident / 2**20, entry.size / 2**20)

    def _bring_in(self, block: nn.Module, args: object) -> None:
        block.to(self.device, non_blocking=True)

    def _send_out(self, block: nn.Module, args: object, output: object) -> None:
        block.to(self.offload_device, non_blocking=True)

    def _stop_streaming(self, entry: _Entry) -> None:
        for hook in entry.hooks:
            hook.remove()
        entry.hooks.clear()
        entry.streamed.clear()

    @contextlib.contextmanager
    def use(self, *modules: nn.Module, working_bytes: int = 0) -> Iterator[tuple[nn.Module, ...]]:
        """Load `modules` onto the device (locked while inside) and yield them."""
        with self._lock:
            entries = []
            for module in modules:
                key = id(module)
                entry = self._entries.pop(key, None) or _Entry(module, module_bytes(module))
                self._entries[key] = entry  # most recently used goes last
                entry.locks += 1
                entries.append(entry)
            try:
                for entry in entries:
                    self._load(entry, working_bytes)
            except BaseException:
                for entry in entries:
                    entry.locks -= 1
                raise
        try:
            yield modules
        finally:
            with self._lock:
                for entry in entries:
                    entry.locks -= 1

    def forget(self, module: nn.Module) -> None:
        """Stop tracking a model (e.g. its handle was dropped) and offload it."""
        with self._lock:
            entry = self._entries.pop(id(module), None)
            if entry is not None and entry.resident:
                self._offload(entry)

    def free_all(self) -> None:
        with self._lock:
            for entry in list(self._entries.values()):
                if entry.locks == 0 and entry.resident:
                    self._offload(entry)
