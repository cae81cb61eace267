"""What the executor hands to the outside: cancel tokens, node hooks, result and error formatting."""

from __future__ import annotations

import contextlib
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol


class CancelToken:
    """Set from another thread to stop the running prompt; checked between nodes and by nodes."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def reset(self) -> None:
        self._event.clear()

    def is_cancelled(self) -> bool:
        return self._event.is_set()


class NodeHooks(Protocol):
    """Wraps each node's execution (the memory manager moves models and maps OOM here)."""

    def around_node(self, node_id: str, class_type: str) -> AbstractContextManager[None]: ...


class NullHooks:
    def around_node(self, node_id: str, class_type: str) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


@dataclass
class RunResult:
    prompt_id: str
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # node id -> UI output
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)


def exception_type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def format_value(value: Any) -> Any:
    """A short, JSON-safe description of an input value for error reports."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:200] + "..."
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{type(value).__name__}(shape={tuple(value.shape)}, dtype={value.dtype})"
    if isinstance(value, (list, tuple)):
        return [format_value(v) for v in value[:8]] + (["..."] if len(value) > 8 else [])
    if isinstance(value, dict):
        return {str(k): format_value(v) for k, v in list(value.items())[:16]}
    return f"<{type(value).__name__}>"
