"""Fluxloom's node implementations, grouped by job (runtime/, image/, sampling/, ...).

The package also serves ComfyUI's `nodes` module to third-party packs (`from nodes import
SaveImage, MAX_RESOLUTION, NODE_CLASS_MAPPINGS`): those names are made on first use by
`nodes.compat.core_nodes`, so importing `nodes.runtime` and friends stays cheap.
"""

from __future__ import annotations

from typing import Any

from executor.schema import MAX_RESOLUTION

__all__ = ["MAX_RESOLUTION"]

_LAZY_MAPPINGS = {"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"}


def __getattr__(name: str) -> Any:
    if name.startswith("_") or (
        name.islower() and name != "common_ksampler"
    ):  # submodules and private names are imported, not made
        raise AttributeError(f"module 'nodes' has no attribute {name!r}")
    from nodes.compat import core_nodes

    value: Any
    if name == "NODE_CLASS_MAPPINGS":
        value = core_nodes.class_mappings()
    elif name == "NODE_DISPLAY_NAME_MAPPINGS":
        value = core_nodes.display_name_mappings()
    elif name == "EXTENSION_WEB_DIRS":
        value = {}
    elif name == "common_ksampler":
        value = core_nodes.common_ksampler
    else:
        value = core_nodes.v1_class(name)
    globals()[name] = value
    return value


def interrupt_processing(value: bool = True) -> None:
    """ComfyUI's `nodes.interrupt_processing`: stop the running prompt from inside a node."""
    from nodes.compat.comfy.model_management import interrupt_current_processing

    interrupt_current_processing(value)


def before_node_execution() -> None:
    """ComfyUI's `nodes.before_node_execution`: raise if the running prompt was interrupted."""
    from nodes.compat.comfy.model_management import throw_exception_if_processing_interrupted

    throw_exception_if_processing_interrupted()
