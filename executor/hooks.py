"""Node hooks: how the executor lets the outside wrap each node's execution.

The memory manager's hooks (nodes.runtime.hooks) move models and map out-of-memory errors here; the
executor itself knows only this protocol.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Protocol


class NodeHooks(Protocol):
    """Wraps each node's execution."""

    def around_node(self, node_id: str, class_type: str) -> AbstractContextManager[None]: ...


class NullHooks:
    def around_node(self, node_id: str, class_type: str) -> AbstractContextManager[None]:
        return contextlib.nullcontext()
