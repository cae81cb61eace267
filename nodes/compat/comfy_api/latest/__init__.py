"""ComfyUI's `comfy_api.latest`: `io`, `ui`, `ComfyExtension` for V3 packs."""

from __future__ import annotations

from typing import Any

from ...missing import module_getattr
from . import _io as io
from . import _ui as ui

__getattr__ = module_getattr(__name__)

__all__ = ["ComfyAPI", "ComfyExtension", "io", "ui", "Input", "InputImpl", "Types"]


class ComfyExtension:
    """What a V3 pack's `comfy_entrypoint()` returns; `get_node_list()` gives its node classes."""

    async def on_load(self) -> None:
        return None

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        raise NotImplementedError(f"{type(self).__name__} must define get_node_list()")


class ComfyAPI:
    """The API object some packs build; only progress reporting is offered."""

    class Execution:
        async def set_progress(
            self,
            value: float,
            max_value: float,
            node_id: str | None = None,
            preview_image: Any = None,
            ignore_size_limit: bool = False,
        ) -> None:
            from ...comfy.utils import ProgressBar

            ProgressBar(int(max_value), node_id=node_id).update_absolute(value, int(max_value))

    execution = Execution()


ComfyAPISync = ComfyAPI


class Input:
    """Type names V3 nodes annotate with (`Input.Image` is a tensor)."""

    Image = Any
    Mask = Any
    Latent = Any


InputImpl = Input
Types = Input
