"""ComfyUI's `comfy.model_management` for packs: devices, memory queries and unloading through the
app's MemoryManager, and the interruption contract of the running prompt."""

from __future__ import annotations

import enum
import logging
from typing import Any

import torch

from executor.errors import Interrupted

from ..host import HOST
from ..missing import module_getattr

log = logging.getLogger(__name__)

__getattr__ = module_getattr(__name__)

# A pack that raises this (or calls `throw_exception_if_processing_interrupted`) interrupts the prompt.
InterruptProcessingException = Interrupted
OOM_EXCEPTION = torch.OutOfMemoryError
XFORMERS_IS_AVAILABLE = False
XFORMERS_ENABLED_VAE = False
ENABLE_PYTORCH_ATTENTION = True
DISABLE_SMART_MEMORY = False
EXTRA_RESERVED_VRAM = 0


class VRAMState(enum.Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


class CPUState(enum.Enum):
    GPU = 0
    CPU = 1
    MPS = 2


def _memory() -> Any:
    return getattr(HOST.services, "memory", None)


def get_torch_device() -> torch.device:
    memory = _memory()
    if memory is not None and getattr(memory, "device", None) is not None:
        return torch.device(memory.device)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


cpu_state = CPUState.GPU if get_torch_device().type != "cpu" else CPUState.CPU
vram_state = VRAMState.NORMAL_VRAM if cpu_state == CPUState.GPU else VRAMState.DISABLED
set_vram_to = vram_state


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    memory = _memory()
    return torch.device(getattr(memory, "offload_device", "cpu") or "cpu")


text_encoder_offload_device = unet_offload_device
vae_offload_device = unet_offload_device


def text_encoder_device() -> torch.device:
    return get_torch_device()


def vae_device() -> torch.device:
    return get_torch_device()


def unet_inital_load_device(parameters: int = 0, dtype: Any = None) -> torch.device:
    return unet_offload_device()


def get_autocast_device(dev: Any) -> str:
    return getattr(dev, "type", "cuda")


def is_device_type(device: Any, kind: str) -> bool:
    return getattr(device, "type", None) == kind


def is_device_cpu(device: Any) -> bool:
    return is_device_type(device, "cpu")


def is_device_mps(device: Any) -> bool:
    return is_device_type(device, "mps")


def is_device_cuda(device: Any) -> bool:
    return is_device_type(device, "cuda")


def is_nvidia() -> bool:
    return torch.cuda.is_available() and torch.version.cuda is not None


def is_amd() -> bool:
    return torch.cuda.is_available() and getattr(torch.version, "hip", None) is not None


def is_intel_xpu() -> bool:
    return False


def directml_enabled() -> bool:
    return False


def mps_mode() -> bool:
    return False


def pytorch_attention_enabled() -> bool:
    return True


def xformers_enabled() -> bool:
    return False


def get_torch_device_name(device: Any) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    return str(device.type)


def _system_memory() -> tuple[int, int]:
    from models.memory.device import system_memory

    return system_memory()


def get_total_memory(dev: Any = None, torch_total_too: bool = False) -> Any:
    device = torch.device(dev) if dev is not None else get_torch_device()
    if device.type == "cuda":
        total = torch.cuda.mem_get_info(device)[1]
        reserved = torch.cuda.memory_reserved(device)
    else:
        total = reserved = _system_memory()[0]
    return (total, reserved) if torch_total_too else total


def get_free_memory(dev: Any = None, torch_free_too: bool = False) -> Any:
    device = torch.device(dev) if dev is not None else get_torch_device()
    if device.type == "cuda":
        free_cuda = torch.cuda.mem_get_info(device)[0]
        free_torch = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        total_free = free_cuda + free_torch
    else:
        total_free = free_torch = _system_memory()[1]
    return (total_free, free_torch) if torch_free_too else total_free


def module_size(module: torch.nn.Module) -> int:
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def soft_empty_cache(force: bool = False) -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def unload_all_models() -> None:
    """Move every model the memory manager holds back off the compute device."""
    memory = _memory()
    if memory is not None:
        memory.free_all()
    soft_empty_cache()


def free_memory(memory_required: int, device: Any, keep_loaded: Any = ()) -> None:
    unload_all_models()


def cleanup_models(*_args: Any, **_kwargs: Any) -> None:
    return None


def load_models_gpu(models: Any, *_args: Any, **_kwargs: Any) -> None:
    """Our memory manager loads models when nodes use them; nothing to do ahead of time."""
    return None


def load_model_gpu(model: Any) -> None:
    return None


def loaded_models(only_currently_used: bool = False) -> list[Any]:
    return []


def cast_to_device(tensor: torch.Tensor, device: Any, dtype: Any, copy: bool = False) -> torch.Tensor:
    return tensor.to(device=device, dtype=dtype, copy=copy)


def cast_to(
    weight: torch.Tensor,
    dtype: Any = None,
    device: Any = None,
    non_blocking: bool = False,
    copy: bool = False,
    stream: Any = None,
) -> torch.Tensor:
    return weight.to(device=device, dtype=dtype, non_blocking=non_blocking, copy=copy)


def should_use_fp16(
    device: Any = None, model_params: int = 0, prioritize_performance: bool = True, manual_cast: bool = False
) -> bool:
    device = torch.device(device) if device is not None else get_torch_device()
    return device.type == "cuda"


def should_use_bf16(
    device: Any = None, model_params: int = 0, prioritize_performance: bool = True, manual_cast: bool = False
) -> bool:
    device = torch.device(device) if device is not None else get_torch_device()
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def unet_dtype(
    device: Any = None, model_params: int = 0, supported_dtypes: Any = None, weight_dtype: Any = None
) -> torch.dtype:
    return torch.bfloat16 if should_use_bf16(device) else torch.float32


def vae_dtype(device: Any = None, allowed_dtypes: Any = ()) -> torch.dtype:
    return torch.float32


def text_encoder_dtype(device: Any = None) -> torch.dtype:
    return torch.float16 if should_use_fp16(device) else torch.float32


def unet_manual_cast(weight_dtype: Any, inference_device: Any, supported_dtypes: Any = ()) -> None:
    return None


def supports_dtype(device: Any, dtype: torch.dtype) -> bool:
    return dtype == torch.float32 or torch.device(device).type != "cpu" or dtype == torch.bfloat16


def supports_cast(device: Any, dtype: torch.dtype) -> bool:
    return True


def device_supports_non_blocking(device: Any) -> bool:
    return is_device_cuda(torch.device(device))


# --- interruption ----------------------------------------------------------------------------------
def _context() -> Any:
    from executor.adapters import current_context

    return current_context()


def processing_interrupted() -> bool:
    """True when the running prompt was cancelled (POST /interrupt)."""
    ctx = _context()
    return bool(ctx is not None and ctx.should_stop())


def throw_exception_if_processing_interrupted() -> None:
    ctx = _context()
    if ctx is not None:
        ctx.check_cancelled()


def interrupt_current_processing(value: bool = True) -> None:
    """Packs ask to stop the running prompt; raised as an interruption from the calling node."""
    if value and _context() is not None:
        raise Interrupted("interrupted by a node")
