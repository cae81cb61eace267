"""What the memory manager records per model: its tensors and their masters, its streaming plan, counters."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from models.patches import WeightPatch
from models.patching import Part

from .units import Unit, named_tensors, partition, tensor_bytes

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
class TrackedTensor:
    """One tensor of a model: where it lives on the module (all aliases) and its base value."""

    key: str
    locations: list[tuple[weakref.ref[nn.Module], str]]  # weak: the manager must not keep a model alive
    master: torch.Tensor
    size: int

    def owners(self) -> list[tuple[nn.Module, str]]:
        found = [(ref(), attr) for ref, attr in self.locations]
        return [(owner, attr) for owner, attr in found if owner is not None]


@dataclass(eq=False)
class StreamPlan:
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


class ModelEntry:
    def __init__(self, module: nn.Module, part: Part, on_dead: Any) -> None:
        self.ref = weakref.ref(module, on_dead)
        self.label = part.label or type(module).__name__
        self.on_host = part.on_host
        self.tensors: dict[str, TrackedTensor] = {}
        self.alias: dict[str, str] = {}
        self.keys_of_owner: dict[int, list[str]] = {}  # id(module) -> canonical keys of its own tensors
        by_id: dict[int, TrackedTensor] = {}
        for name, owner, attr, t in named_tensors(module):
            record = by_id.get(id(t))
            if record is None:
                record = by_id[id(t)] = self.tensors[name] = TrackedTensor(
                    name, [], t.detach(), tensor_bytes(t)
                )
            record.locations.append((weakref.ref(owner), attr))
            self.alias[name] = record.key
            self.keys_of_owner.setdefault(id(owner), []).append(record.key)
        self.size = sum(t.size for t in self.tensors.values())
        self.locks = 0
        self.loaded = False
        self.on_device: set[str] = set()  # keys whose device copy is in place
        self.device_bytes = 0
        self.plan: StreamPlan | None = None
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
