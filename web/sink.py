"""The web EventSink: executor events -> ComfyUI WebSocket messages, in ComfyUI's order.

Runs in the worker thread. It records each event for history first (same timestamps in both), derives
`progress_state` (the per-node running/finished/error map the frontend highlights from), throttles
progress per node, and posts the encoded frames to the loop through `Hub.send_threadsafe`.
Execution messages go only to the submitting client; without a client id they are not sent at all,
while progress, progress_state, previews and execution_interrupted are broadcast (ComfyUI's rules).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from executor import events as ev
from executor.history import RunRecorder, now_ms

from .hub import Frame, Hub, json_frame, preview_frame

_BROADCAST_WITHOUT_CLIENT = {"progress", "progress_state", "execution_interrupted"}


class WebEventSink:
    """Translates one prompt's events for the hub; `finish` sends the closing `executing` null."""

    def __init__(
        self,
        hub: Hub,
        recorder: RunRecorder,
        *,
        client_id: str | None,
        progress_interval_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.recorder = recorder
        self.prompt_id = recorder.prompt_id
        self.client_id = client_id or None
        self.interval = progress_interval_s
        self.clock = clock
        self.nodes: dict[str, dict[str, Any]] = {}  # progress_state entries, in start order
        self.running: str | None = None
        self.last_sent: dict[str, float] = {}
        self.current_node: str | None = None

    # --- sending -------------------------------------------------------------------------------
    def _send(self, frames: list[Frame]) -> None:
        if frames:
            self.hub.send_threadsafe(frames, self.client_id)

    def _message(self, kind: str, data: dict[str, Any], *, droppable: bool = False) -> list[Frame]:
        if self.client_id is None and kind not in _BROADCAST_WITHOUT_CLIENT:
            return []
        return [json_frame(kind, data, droppable=droppable)]

    def _state(
        self, node_id: str, state: str, value: float = 0, maximum: float = 1, display: str | None = None
    ) -> None:
        entry = self.nodes.get(node_id)
        if entry is None:
            entry = self.nodes[node_id] = {
                "value": value,
                "max": maximum,
                "state": state,
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": display or node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
        entry.update(value=value, max=maximum, state=state)

    def _progress_state(self) -> list[Frame]:
        nodes = {k: dict(v) for k, v in self.nodes.items()}
        return self._message("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes}, droppable=True)

    def _finish_running(self) -> None:
        if self.running is not None:
            entry = self.nodes[self.running]
            self._state(self.running, "finished", entry["max"], entry["max"])
            self.running = None

    # --- events --------------------------------------------------------------------------------
    def emit(self, event: ev.Event) -> None:
        lifecycle = self.recorder.record(event, now_ms())
        frames: list[Frame] = []
        if isinstance(event, ev.ExecutionStart):
            assert lifecycle is not None
            frames = self._message(*lifecycle)
        elif isinstance(event, ev.ExecutionCached):
            assert lifecycle is not None
            frames = self._message(*lifecycle)
            for node_id in event.nodes:
                self._state(node_id, "finished", 1, 1)
            if event.nodes:
                frames += self._progress_state()
        elif isinstance(event, ev.Executing):
            frames = self._executing(event)
        elif isinstance(event, ev.Progress):
            frames = self._progress(event)
        elif isinstance(event, ev.Executed):
            frames = self._message(
                "executed",
                {
                    "node": event.node_id,
                    "display_node": event.display_node or event.node_id,
                    "output": event.output,
                    "prompt_id": self.prompt_id,
                },
            )
        elif isinstance(event, ev.ExecutionSuccess):
            assert lifecycle is not None
            self._finish_running()
            frames = (self._progress_state() if self.nodes else []) + self._message(*lifecycle)
        elif isinstance(event, ev.ExecutionInterrupted):
            # The interrupted node did not finish; the message itself clears the UI's running state.
            assert lifecycle is not None
            frames = self._message(*lifecycle)
        elif isinstance(event, ev.ExecutionError):
            assert lifecycle is not None
            if event.node_id in self.nodes:
                self._state(
                    event.node_id,
                    "error",
                    self.nodes[event.node_id]["value"],
                    self.nodes[event.node_id]["max"],
                )
                self.running = None
            frames = (self._progress_state() if self.nodes else []) + self._message(*lifecycle)
        self._send(frames)

    def _executing(self, event: ev.Executing) -> list[Frame]:
        if event.node_id is None:
            return self._message("executing", {"node": None, "prompt_id": self.prompt_id})
        self._finish_running()
        self.running = self.current_node = event.node_id
        self._state(event.node_id, "running", 0, 1, event.display_node)
        return self._progress_state() + self._message(
            "executing",
            {
                "node": event.node_id,
                "display_node": event.display_node or event.node_id,
                "prompt_id": self.prompt_id,
            },
        )

    def _progress(self, event: ev.Progress) -> list[Frame]:
        now = self.clock()
        final = event.value >= event.max
        last = self.last_sent.get(event.node_id)
        if not final and last is not None and now - last < self.interval:
            return []  # throttled: a later update (and always the last one) carries the news
        self.last_sent[event.node_id] = now
        entry = self.nodes.get(event.node_id)
        self._state(event.node_id, entry["state"] if entry else "running", event.value, event.max)
        frames = self._message(
            "progress",
            {"value": event.value, "max": event.max, "prompt_id": self.prompt_id, "node": event.node_id},
            droppable=True,
        )
        frames += self._progress_state()
        if event.preview:
            display = entry["display_node_id"] if entry else event.node_id
            frames.append(
                preview_frame(
                    event.preview,
                    event.preview_format,
                    {
                        "node_id": event.node_id,
                        "prompt_id": self.prompt_id,
                        "display_node_id": display,
                        "parent_node_id": None,
                        "real_node_id": event.node_id,
                    },
                )
            )
        return frames

    def error(self, data: dict[str, Any]) -> None:
        """Send an execution_error that happened outside any node (already recorded)."""
        self._send(self._message("execution_error", data))

    def finish(self) -> None:
        """The closing `executing` with node null; call after history is written."""
        self.current_node = None
        self._send(self._message("executing", {"node": None, "prompt_id": self.prompt_id}))
