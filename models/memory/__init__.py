"""Placing models on the compute device: the manager, the device abstraction, streaming units, estimates."""

from .device import ComputeDevice, CpuDevice, CudaDevice, default_device, system_memory
from .manager import DeviceMemoryError, MemoryManager, MemoryStats
from .units import module_bytes, partition, repeated_block_bytes

__all__ = [
    "ComputeDevice",
    "CpuDevice",
    "CudaDevice",
    "DeviceMemoryError",
    "MemoryManager",
    "MemoryStats",
    "default_device",
    "module_bytes",
    "partition",
    "repeated_block_bytes",
    "system_memory",
]
