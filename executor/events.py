"""Typed execution events and the sink protocol the executor reports to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class ExecutionStart:
    prompt_id: str
    kind: Literal["execution_start"] = "execution_start"


@dataclass(frozen=True)
class ExecutionCached:
    prompt_id: str
    nodes: tuple[str, ...]
    kind: Literal["execution_cached"] = "execution_cached"


@dataclass(frozen=True)
class Executing:
    """A node starts; `node_id` None means the prompt is finished."""

    prompt_id: str
    node_id: str | None
    display_node: str | None = None
    kind: Literal["executing"] = "executing"


@dataclass(frozen=True)
class Progress:
    prompt_id: str
    node_id: str
    value: float
    max: float
    preview: bytes | None = None  # encoded image (JPEG or PNG)
    preview_format: str = "JPEG"
    kind: Literal["progress"] = "progress"


@dataclass(frozen=True)
class Executed:
    """A node produced UI output (images, text, ...)."""

    prompt_id: str
    node_id: str
    output: dict[str, Any]
    display_node: str | None = None
    kind: Literal["executed"] = "executed"


@dataclass(frozen=True)
class ExecutionSuccess:
    prompt_id: str
    kind: Literal["execution_success"] = "execution_success"


@dataclass(frozen=True)
class ExecutionError:
    prompt_id: str
    node_id: str
    node_type: str
    exception_type: str
    exception_message: str
    traceback: tuple[str, ...] = ()
    current_inputs: dict[str, Any] = field(default_factory=dict)
    current_outputs: tuple[str, ...] = ()
    executed: tuple[str, ...] = ()
    kind: Literal["execution_error"] = "execution_error"


@dataclass(frozen=True)
class ExecutionInterrupted:
    prompt_id: str
    node_id: str | None
    node_type: str | None
    executed: tuple[str, ...] = ()
    kind: Literal["execution_interrupted"] = "execution_interrupted"


Event = (
    ExecutionStart
    | ExecutionCached
    | Executing
    | Progress
    | Executed
    | ExecutionSuccess
    | ExecutionError
    | ExecutionInterrupted
)


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


class NullSink:
    def emit(self, event: Event) -> None:
        pass


class ListSink:
    """Collects every event in order (tests, and scripts that want the whole record of a run)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def of_kind(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]
