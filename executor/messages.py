"""ComfyUI's message shapes, built in one place: `(type, data)` pairs for the WebSocket and history.

The web hub sends these over the socket and the run recorder keeps the lifecycle ones (start, cached,
success, error, interrupted) in history's `status.messages`, so both always agree on every field. The
module lives in `executor/` because history is written here and imports run web -> executor only.
Field names and order follow ComfyUI (comfy-protocol.md 3.3); binary preview framing is the hub's job,
but the metadata of a type-4 preview frame is a shape like the others and is built here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from . import events as ev

Message = tuple[str, dict[str, Any]]

# Lifecycle messages that end a prompt; history's `status_str` is derived from which one came.
TERMINAL = ("execution_success", "execution_error", "execution_interrupted")


def now_ms() -> int:
    """Message timestamps: milliseconds since the epoch."""
    return int(time.time() * 1000)


# --- queue --------------------------------------------------------------------------------------
def status(queue_remaining: int, sid: str | None = None) -> Message:
    """`status`; the one a socket gets on connecting carries its `sid`."""
    data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": queue_remaining}}}
    if sid is not None:
        data["sid"] = sid
    return "status", data


# --- lifecycle (also kept in history) ---------------------------------------------------------------
def execution_start(prompt_id: str, timestamp: int) -> Message:
    return "execution_start", {"prompt_id": prompt_id, "timestamp": timestamp}


def execution_cached(prompt_id: str, nodes: Iterable[str], timestamp: int) -> Message:
    return "execution_cached", {"nodes": list(nodes), "prompt_id": prompt_id, "timestamp": timestamp}


def execution_success(prompt_id: str, timestamp: int) -> Message:
    return "execution_success", {"prompt_id": prompt_id, "timestamp": timestamp}


def execution_error(
    prompt_id: str,
    *,
    node_id: str | None,
    node_type: str | None,
    exception_type: str,
    exception_message: str,
    traceback: Iterable[str] = (),
    current_inputs: Mapping[str, Any] | None = None,
    current_outputs: Iterable[str] = (),
    executed: Iterable[str] = (),
    timestamp: int,
) -> Message:
    """A failed prompt. `node_id`/`node_type` None: the failure happened outside any node."""
    return "execution_error", {
        "prompt_id": prompt_id,
        "node_id": node_id,
        "node_type": node_type,
        "executed": list(executed),
        "exception_message": exception_message,
        "exception_type": exception_type,
        "traceback": list(traceback),
        "current_inputs": dict(current_inputs or {}),
        "current_outputs": list(current_outputs),
        "timestamp": timestamp,
    }


def execution_interrupted(
    prompt_id: str, node_id: str | None, node_type: str | None, executed: Iterable[str], timestamp: int
) -> Message:
    return "execution_interrupted", {
        "prompt_id": prompt_id,
        "node_id": node_id,
        "node_type": node_type,
        "executed": list(executed),
        "timestamp": timestamp,
    }


def lifecycle(event: ev.Event, timestamp: int) -> Message | None:
    """The lifecycle message of an event (start, cached, success, error, interrupted), else None."""
    if isinstance(event, ev.ExecutionStart):
        return execution_start(event.prompt_id, timestamp)
    if isinstance(event, ev.ExecutionCached):
        return execution_cached(event.prompt_id, event.nodes, timestamp)
    if isinstance(event, ev.ExecutionSuccess):
        return execution_success(event.prompt_id, timestamp)
    if isinstance(event, ev.ExecutionError):
        return execution_error(
            event.prompt_id,
            node_id=event.node_id,
            node_type=event.node_type,
            exception_type=event.exception_type,
            exception_message=event.exception_message,
            traceback=event.traceback,
            current_inputs=event.current_inputs,
            current_outputs=event.current_outputs,
            executed=event.executed,
            timestamp=timestamp,
        )
    if isinstance(event, ev.ExecutionInterrupted):
        return execution_interrupted(
            event.prompt_id, event.node_id, event.node_type, event.executed, timestamp
        )
    return None


# --- nodes --------------------------------------------------------------------------------------
def executing(prompt_id: str, node_id: str, display_node: str | None = None) -> Message:
    """A node starts."""
    return "executing", {"node": node_id, "display_node": display_node or node_id, "prompt_id": prompt_id}


def executing_text(prompt_id: str, node_id: str, display_node: str | None = None) -> str:
    """The JSON text of the `executing` message (type and data): sent once per node, so it is
    formatted directly rather than encoded from a dict (a third of the cost)."""
    node = json_string(node_id)
    display = node if display_node is None or display_node == node_id else json_string(display_node)
    return (
        f'{{"type": "executing", "data": {{"node": {node}, "display_node": {display}, '
        f'"prompt_id": {json_string(prompt_id)}}}}}'
    )


def executing_done(prompt_id: str) -> Message:
    """`executing` with node null: the prompt is over and its history is written."""
    return "executing", {"node": None, "prompt_id": prompt_id}


def executing_resumed(node_id: str) -> Message:
    """What a socket that reconnects mid-prompt is told: only the running node, as ComfyUI does."""
    return "executing", {"node": node_id}


def executed(
    prompt_id: str, node_id: str, output: Mapping[str, Any] | None, display_node: str | None
) -> Message:
    return "executed", {
        "node": node_id,
        "display_node": display_node or node_id,
        "output": output,
        "prompt_id": prompt_id,
    }


def progress(prompt_id: str, node_id: str, value: float, maximum: float) -> Message:
    return "progress", {"value": value, "max": maximum, "prompt_id": prompt_id, "node": node_id}


def node_state(
    prompt_id: str, node_id: str, state: str, value: float, maximum: float, display_node: str | None
) -> dict[str, Any]:
    """One entry of `progress_state.nodes`; `state` is running, finished or error."""
    return {
        "value": value,
        "max": maximum,
        "state": state,
        "node_id": node_id,
        "prompt_id": prompt_id,
        "display_node_id": display_node or node_id,
        "parent_node_id": None,
        "real_node_id": node_id,
    }


def node_state_text(node_id: str, entry: Mapping[str, Any]) -> str:
    """`"<node id>": {...}` for one `node_state` entry, as `json.dumps` writes it, formatted directly:
    the final progress_state of a prompt holds one per node."""
    key = json_string(node_id)
    real = key if entry["real_node_id"] == node_id else json_string(entry["real_node_id"])
    display = key if entry["display_node_id"] == node_id else json_string(entry["display_node_id"])
    parent = entry["parent_node_id"]
    return (
        f'{key}: {{"value": {_number(entry["value"])}, "max": {_number(entry["max"])}, '
        f'"state": {json_string(entry["state"])}, "node_id": {key}, "prompt_id": {json_string(entry["prompt_id"])}, '
        f'"display_node_id": {display}, "parent_node_id": {"null" if parent is None else json_string(parent)}, '
        f'"real_node_id": {real}}}'
    )


def _number(value: Any) -> str:
    return str(value) if type(value) is int else json.dumps(value)


def json_string(text: str) -> str:
    """`json.dumps(text)`, with a shortcut for the plain ASCII ids nearly every node and prompt has."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text)


def progress_state(prompt_id: str, nodes: Mapping[str, Mapping[str, Any]]) -> Message:
    """Every node that is not pending, by node id (the frontend replaces its whole map with this)."""
    return "progress_state", {"prompt_id": prompt_id, "nodes": dict(nodes)}


def progress_state_text(prompt_id: str, encoded_entries: Iterable[str]) -> str:
    """The JSON text of the `progress_state` message (type and data) from entries already encoded as
    `"<node id>": {...}`: a sink re-sends the same finished entries many times and encodes each once."""
    return (
        f'{{"type": "progress_state", "data": {{"prompt_id": {json.dumps(prompt_id)}, '
        f'"nodes": {{{", ".join(encoded_entries)}}}}}}}'
    )


def preview_metadata(prompt_id: str, node_id: str, display_node: str | None) -> dict[str, Any]:
    """The JSON header of a type-4 binary preview frame (the hub adds `image_type`)."""
    return {
        "node_id": node_id,
        "prompt_id": prompt_id,
        "display_node_id": display_node or node_id,
        "parent_node_id": None,
        "real_node_id": node_id,
    }


# --- what error messages say about values -------------------------------------------------------
def exception_type_name(exc: BaseException) -> str:
    """`exception_type`: the class name, qualified by its module unless it is a builtin."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def format_value(value: Any) -> Any:
    """A short, JSON-safe description of an input value for `current_inputs`."""
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
