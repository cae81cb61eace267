"""The compute device as the memory manager sees it: capacity, copies in, prefetch streams, stats.

`CudaDevice` asks the driver and the caching allocator; `CpuDevice` computes where the weights
already live, so moving a tensor "in" costs nothing unless `simulate_copies` is set, and its
capacity is unlimited unless `total_bytes` simulates a card of that size (tests, benchmarks).
The accounting above this layer is the same for both.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Protocol

import torch

log = logging.getLogger(__name__)


def system_memory() -> tuple[int, int]:
    """(total, available) RAM in bytes; zeros where the platform does not tell."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        values: dict[str, int] = {}
        for line in meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[key] = int(parts[0]) * 1024
        return values.get("MemTotal", 0), values.get("MemAvailable", values.get("MemFree", 0))
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return 0, 0


class ComputeDevice(Protocol):
    """What the memory manager needs from a device."""

    torch_device: torch.device
    overlaps_copies: bool  # True when prefetch copies run beside compute (a side stream)

    def capacity_bytes(self, resident: int) -> int | None:
        """Bytes models may occupy in all, given `resident` bytes the manager holds there now; None: no limit."""

    def copy_in(self, host: torch.Tensor) -> torch.Tensor:
        """A copy of `host` on the device (may be `host` itself when they share memory)."""

    def prepare_host(self, host: torch.Tensor) -> torch.Tensor:
        """The host tensor to keep for repeated copies in (pinned on CUDA)."""

    def prefetch_context(self) -> contextlib.AbstractContextManager[Any]:
        """Context in which prefetch copies are issued."""

    def prefetch_done(self) -> Any:
        """A marker recorded after prefetch copies were issued (an event on CUDA)."""

    def wait(self, marker: Any, tensors: list[torch.Tensor]) -> None:
        """Make compute wait for `marker`; `tensors` are now used by the compute stream."""

    def empty_cache(self) -> None:
        """Return cached, unused device memory to the driver."""

    def stats(self) -> dict[str, Any]:
        """ComfyUI's /system_stats device entry."""


class CpuDevice:
    """Compute on the CPU (weights never move); `total_bytes` simulates a card of that size."""

    overlaps_copies = False

    def __init__(self, total_bytes: int | None = None, *, simulate_copies: bool = False) -> None:
        self.torch_device = torch.device("cpu")
        self.total_bytes = total_bytes
        self.simulate_copies = simulate_copies

    def capacity_bytes(self, resident: int) -> int | None:
        return self.total_bytes

    def copy_in(self, host: torch.Tensor) -> torch.Tensor:
        return host.clone() if self.simulate_copies else host

    def prepare_host(self, host: torch.Tensor) -> torch.Tensor:
        return host

    def prefetch_context(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def prefetch_done(self) -> Any:
        return None

    def wait(self, marker: Any, tensors: list[torch.Tensor]) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        """On the CPU ComfyUI reports system memory as the device's VRAM."""
        total, free = system_memory()
        return {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": total,
            "vram_free": free,
            "torch_vram_total": total,
            "torch_vram_free": free,
        }


class CudaDevice:
    """A CUDA device: free memory from the driver plus the allocator's cached blocks; copies on a side stream."""

    overlaps_copies = True

    def __init__(self, index: int = 0) -> None:
        self.torch_device = torch.device("cuda", index)
        self._stream: torch.cuda.Stream | None = None

    def _side_stream(self) -> torch.cuda.Stream:
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.torch_device)
        return self._stream

    def _reclaimable(self) -> int:
        return int(
            torch.cuda.memory_reserved(self.torch_device) - torch.cuda.memory_allocated(self.torch_device)
        )

    def capacity_bytes(self, resident: int) -> int | None:
        free, _ = torch.cuda.mem_get_info(self.torch_device)
        return int(free) + self._reclaimable() + resident

    def copy_in(self, host: torch.Tensor) -> torch.Tensor:
        return host.to(self.torch_device, non_blocking=True)

    def prepare_host(self, host: torch.Tensor) -> torch.Tensor:
        if host.device.type != "cpu" or host.is_pinned():
            return host
        try:
            return host.pin_memory()
        except RuntimeError as exc:  # pinned memory exhausted: plain copies still work, synchronously
            log.debug("could not pin %s: %s", tuple(host.shape), exc)
            return host

    def prefetch_context(self) -> contextlib.AbstractContextManager[Any]:
        stream = self._side_stream()
        stream.wait_stream(torch.cuda.current_stream(self.torch_device))
        return torch.cuda.stream(stream)

    def prefetch_done(self) -> Any:
        event = torch.cuda.Event()
        event.record(self._side_stream())
        return event

    def wait(self, marker: Any, tensors: list[torch.Tensor]) -> None:
        if marker is None:
            return
        current = torch.cuda.current_stream(self.torch_device)
        current.wait_event(marker)
        for tensor in tensors:  # allocated on the side stream, used and freed on this one
            tensor.record_stream(current)

    def empty_cache(self) -> None:
        torch.cuda.empty_cache()

    def stats(self) -> dict[str, Any]:
        """ComfyUI's figures: driver free plus the allocator's inactive cache; torch_* the allocator's own."""
        free, total = torch.cuda.mem_get_info(self.torch_device)
        reserved = torch.cuda.memory_reserved(self.torch_device)
        active = torch.cuda.memory_stats(self.torch_device).get("active_bytes.all.current", 0)
        name = f"{self.torch_device} {torch.cuda.get_device_name(self.torch_device)} : {_allocator_backend()}"
        return {
            "name": name,
            "type": "cuda",
            "index": self.torch_device.index,
            "vram_total": int(total),
            "vram_free": int(free + reserved - active),
            "torch_vram_total": int(reserved),
            "torch_vram_free": int(reserved - active),
        }


def _allocator_backend() -> str:
    with contextlib.suppress(Exception):
        return str(torch.cuda.get_allocator_backend())
    return "native"


def default_device() -> ComputeDevice:
    """CUDA when present, else the CPU (unlimited)."""
    if torch.cuda.is_available():
        return CudaDevice(torch.cuda.current_device())
    return CpuDevice()


def as_device(device: ComputeDevice | torch.device | str) -> ComputeDevice:
    if isinstance(device, (str, torch.device)):
        torch_device = torch.device(device)
        if torch_device.type == "cuda":
            return CudaDevice(torch_device.index or 0)
        return CpuDevice()
    return device
