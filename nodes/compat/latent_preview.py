"""ComfyUI's `latent_preview` for packs that sample themselves: a step callback driving progress.

No latent previewer is offered (`get_previewer` returns None, as ComfyUI does with previews off).
"""

from __future__ import annotations

from typing import Any

from .comfy.cli_args import LatentPreviewMethod
from .comfy.utils import ProgressBar
from .missing import module_getattr

__getattr__ = module_getattr(__name__)

MAX_PREVIEW_RESOLUTION = 512
default_preview_method = LatentPreviewMethod.NoPreviews


def set_preview_method(override: Any) -> None:
    return None


def get_previewer(device: Any, latent_format: Any) -> None:
    return None


def prepare_callback(model: Any, steps: int, x0_output_dict: dict[str, Any] | None = None):
    """A k-diffusion style callback `(step, x0, x, total_steps)` that advances a ProgressBar."""
    pbar = ProgressBar(steps)

    def callback(step: int, x0: Any, x: Any, total_steps: int) -> None:
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        pbar.update_absolute(step + 1, total_steps, None)

    return callback
