"""ComfyUI's `comfy.utils` for packs: progress bars that reach the client, resizing, tensor files.

`ProgressBar` reports through the running node's context, so the client gets ComfyUI's `progress`
messages (and a binary preview when `update_absolute` is given one). Outside a node it only counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from models.imaging import resize as _resize

from ..missing import module_getattr

log = logging.getLogger(__name__)

__getattr__ = module_getattr(__name__)

PROGRESS_BAR_ENABLED = True
_global_hook: Callable[..., Any] | None = None


def set_progress_bar_enabled(enabled: bool) -> None:
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = bool(enabled)


def set_progress_bar_global_hook(function: Callable[..., Any] | None) -> None:
    """A hook `(value, total, preview, node_id=None)` called on every update besides our own reporting."""
    global _global_hook
    _global_hook = function


class ProgressBar:
    """`ProgressBar(total)`; `update(n)` adds n steps, `update_absolute(value, total, preview)` sets them."""

    def __init__(self, total: int, node_id: str | None = None) -> None:
        from executor.adapters import current_context

        self.total = total
        self.current: float = 0
        self.ctx = current_context()
        self.node_id = node_id if node_id is not None else getattr(self.ctx, "node_id", None)

    def update_absolute(self, value: float, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        if self.total and value > self.total:
            value = self.total
        self.current = value
        if _global_hook is not None:
            _global_hook(self.current, self.total, preview, node_id=self.node_id)
        if self.ctx is None or not PROGRESS_BAR_ENABLED:
            return
        self.ctx.report_progress(self.current, self.total)
        if preview is not None:
            # As ComfyUI's progress hook: the preview goes to the prompt's client as a binary image frame.
            from nodes.runtime.channel import CHANNEL, image_frame

            try:
                CHANNEL.send_bytes(image_frame(*(list(preview) + [None, None])[:3]), CHANNEL.current_client())
            except Exception:
                log.warning("progress preview could not be encoded; not sent", exc_info=True)

    def update(self, value: float) -> None:
        self.update_absolute(self.current + value)


def common_upscale(
    samples: torch.Tensor, width: int, height: int, upscale_method: str, crop: str
) -> torch.Tensor:
    """Resize channel-first samples [B, C, H, W] (or [B, C, T, H, W]); ComfyUI's methods and center crop."""
    if samples.ndim == 5:
        b, c, t, h, w = samples.shape
        flat = samples.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        out = common_upscale(flat, width, height, upscale_method, crop)
        return out.reshape(b, t, c, height, width).permute(0, 2, 1, 3, 4)
    return _resize.resize(samples, int(width), int(height), upscale_method, crop)


def lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return _resize.lanczos(samples, int(width), int(height))


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return _resize.bislerp(samples, int(width), int(height))


def load_torch_file(
    ckpt: str | Path, safe_load: bool = False, device: Any = None, return_metadata: bool = False
) -> Any:
    """A state dict from a .safetensors/.sft file or a torch pickle (weights only); metadata on request."""
    path = str(ckpt)
    device = torch.device("cpu") if device is None else torch.device(device)
    metadata: dict[str, str] | None = None
    if path.lower().endswith((".safetensors", ".sft")):
        from safetensors import safe_open

        sd = {}
        with safe_open(path, framework="pt", device=str(device)) as handle:
            metadata = handle.metadata()
            for key in handle.keys():
                sd[key] = handle.get_tensor(key)
    else:
        loaded = torch.load(path, map_location=device, weights_only=True)
        sd = (
            loaded.get("state_dict", loaded)
            if isinstance(loaded, dict) and "state_dict" in loaded
            else loaded
        )
    return (sd, metadata) if return_metadata else sd


def save_torch_file(
    sd: Mapping[str, torch.Tensor], ckpt: str | Path, metadata: Mapping[str, str] | None = None
) -> None:
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in sd.items()},
        str(ckpt),
        metadata=dict(metadata) if metadata is not None else None,
    )


def safetensors_header(safetensors_path: str | Path, max_size: int = 100 * 1024 * 1024) -> bytes | None:
    """The JSON header of a .safetensors file as bytes; None when it is larger than `max_size`."""
    with open(safetensors_path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if length > max_size:
            return None
        return handle.read(length)


def calculate_parameters(sd: Mapping[str, torch.Tensor], prefix: str = "") -> int:
    return sum(v.nelement() for k, v in sd.items() if k.startswith(prefix))


def weight_dtype(sd: Mapping[str, torch.Tensor], prefix: str = "") -> torch.dtype | None:
    counts: dict[torch.dtype, int] = {}
    for k, v in sd.items():
        if k.startswith(prefix):
            counts[v.dtype] = counts.get(v.dtype, 0) + v.nelement()
    return max(counts, key=counts.__getitem__) if counts else None


def state_dict_key_replace(sd: dict[str, Any], keys_to_replace: Mapping[str, str]) -> dict[str, Any]:
    for old, new in keys_to_replace.items():
        if old in sd:
            sd[new] = sd.pop(old)
    return sd


def state_dict_prefix_replace(
    sd: dict[str, Any], replace_prefix: Mapping[str, str], filter_keys: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {} if filter_keys else sd
    for old, new in replace_prefix.items():
        for key in [k for k in sd if k.startswith(old)]:
            out[new + key[len(old) :]] = sd.pop(key) if not filter_keys else sd[key]
    return out


def repeat_to_batch_size(tensor: torch.Tensor, batch_size: int, dim: int = 0) -> torch.Tensor:
    if tensor.shape[dim] > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if tensor.shape[dim] < batch_size:
        repeats = [1] * tensor.ndim
        repeats[dim] = math.ceil(batch_size / tensor.shape[dim])
        return tensor.repeat(*repeats).narrow(dim, 0, batch_size)
    return tensor


def resize_to_batch_size(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    return repeat_to_batch_size(tensor, batch_size)


def get_tiled_scale_steps(width: int, height: int, tile_x: int, tile_y: int, overlap: int) -> int:
    rows = 1 if height <= tile_y else math.ceil((height - overlap) / (tile_y - overlap))
    cols = 1 if width <= tile_x else math.ceil((width - overlap) / (tile_x - overlap))
    return rows * cols
