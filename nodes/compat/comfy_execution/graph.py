"""ComfyUI's `comfy_execution.graph`: `ExecutionBlocker` (an output that blocks the nodes using it)."""

from __future__ import annotations

from typing import Any

from ..missing import module_getattr
from .graph_utils import GraphBuilder, is_link

__getattr__ = module_getattr(__name__)

__all__ = ["ExecutionBlocker", "GraphBuilder", "is_link"]


class ExecutionBlocker:
    """Returned in place of an output: nodes receiving it are not run (with `message`, the prompt fails)."""

    def __init__(self, message: str | None) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ExecutionBlocker) and other.message == self.message

    def __hash__(self) -> int:
        return hash(("ExecutionBlocker", self.message))
