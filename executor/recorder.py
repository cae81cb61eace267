"""What history keeps about one run, collected while it runs.

`RunRecorder` is the EventSink half the worker feeds every event to: lifecycle messages (with their
timestamps), UI outputs and node meta. Afterwards `status()` gives history's `status` object
(`status_str`, `completed`, `messages`); the queue stores it with `outputs` and `meta`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import events as ev
from . import messages


class RunRecorder:
    """Collects what history keeps about one run: lifecycle messages, UI outputs and node meta."""

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self.messages: list[list[Any]] = []
        self.outputs: dict[str, Any] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.terminal: str | None = None

    def emit(self, event: ev.Event) -> None:
        self.record(event, messages.now_ms())

    def record(self, event: ev.Event, timestamp: int) -> messages.Message | None:
        """Record an event; returns its lifecycle message (so a caller can send the very same one)."""
        if isinstance(event, ev.Executed):
            self.outputs[event.node_id] = event.output
            self.meta[event.node_id] = {
                "node_id": event.node_id,
                "display_node": event.display_node or event.node_id,
                "parent_node": None,
                "real_node_id": event.node_id,
            }
            return None
        message = messages.lifecycle(event, timestamp)
        if message is not None:
            self._add(message)
        return message

    def fail(
        self, exception_type: str, exception_message: str, traceback: Iterable[str] = ()
    ) -> messages.Message:
        """Record a failure outside any node (validation at run time, an engine bug); returns the message."""
        message = messages.execution_error(
            self.prompt_id,
            node_id=None,
            node_type=None,
            exception_type=exception_type,
            exception_message=exception_message,
            traceback=traceback,
            timestamp=messages.now_ms(),
        )
        self._add(message)
        return message

    def _add(self, message: messages.Message) -> None:
        kind, data = message
        self.messages.append([kind, data])
        if kind in messages.TERMINAL:
            self.terminal = kind

    def status(self) -> dict[str, Any]:
        success = self.terminal == "execution_success"
        return {
            "status_str": "success" if success else "error",
            "completed": success,
            "messages": self.messages,
        }
