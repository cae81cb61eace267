"""The web EventSink: executor events -> ComfyUI WebSocket messages, in ComfyUI's order.

Runs in the worker thread. It records each event for history first (same timestamps in both), keeps
the per-node running/finished/error map the frontend highlights from, throttles progress per node, and
posts the encoded frames to the loop through `Hub.send_threadsafe`. Execution messages go only to the
submitting client; without a client id they are not sent at all, while progress, progress_state,
previews and execution_interrupted are broadcast (ComfyUI's rules). Nothing is encoded for a socket
that is not connected.

`progress_state` is coalesced. The official frontend replaces its whole node map with each message it
gets (executionStore.applyProgressState: `nodeProgressStates = nodes`, applied once per animation
frame), so a message holding only the nodes that changed would make it forget every other node's
running/finished mark: every message must be the full map. ComfyUI sends that full map on every node
start, finish and progress tick, which makes the bytes per prompt grow with the square of its size.
Here a full state goes out at most every `state_interval_s` (a later change always reaches the client:
a timer on the loop sends what is pending) and the entries sent in total stay within
`STATE_BURST_ENTRIES + STATE_ENTRIES_PER_SECOND * seconds running`; the final state, when the prompt
succeeds or fails, is always sent. So a prompt costs bytes linear in its node count plus a bounded
rate per second, while a small graph still gets several states per second. `executing`, `executed`
and `progress` are sent as ComfyUI sends them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from executor import events as ev
from executor import messages
from executor.recorder import RunRecorder

from .hub import Frame, Hub, json_frame, preview_frame

_BROADCAST_WITHOUT_CLIENT = {"progress", "progress_state", "execution_interrupted"}

STATE_BURST_ENTRIES = 1000  # progress_state entries a prompt may send before the rate applies
STATE_ENTRIES_PER_SECOND = 2000  # then this many entries per second of the prompt's run time


class WebEventSink:
    """Translates one prompt's events for the hub; `finish` sends the closing `executing` null."""

    def __init__(
        self,
        hub: Hub,
        recorder: RunRecorder,
        *,
        client_id: str | None,
        progress_interval_s: float = 0.05,
        state_interval_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.recorder = recorder
        self.prompt_id = recorder.prompt_id
        self.client_id = client_id or None
        self.interval = progress_interval_s
        self.state_interval = state_interval_s
        self.clock = clock
        self.nodes: dict[str, dict[str, Any]] = {}  # progress_state entries, in start order
        self._encoded: dict[str, str] = {}  # their JSON text, dropped when an entry changes
        self.running: str | None = None
        self.last_sent: dict[str, float] = {}
        self.current_node: str | None = None
        # progress_state coalescing; the loop's timer and the worker share it under the lock.
        self._lock = threading.Lock()
        self._started = clock()
        self._last_state = float("-inf")
        self._entries_sent = 0
        self._dirty = False
        self._timer = False
        self._closed = False

    # --- sending -------------------------------------------------------------------------------
    def _send(self, frames: list[Frame]) -> None:
        if frames:
            self.hub.send_threadsafe(frames, self.client_id)

    def _wanted(self, kind: str) -> bool:
        if self.client_id is None:
            return kind in _BROADCAST_WITHOUT_CLIENT and self.hub.has_clients()
        return self.hub.is_connected(self.client_id)

    def _message(self, message: messages.Message, *, droppable: bool = False) -> list[Frame]:
        kind, data = message
        return [json_frame(kind, data, droppable=droppable)] if self._wanted(kind) else []

    # --- progress_state ------------------------------------------------------------------------
    def _state(
        self, node_id: str, state: str, value: float = 0, maximum: float = 1, display: str | None = None
    ) -> None:
        entry = self.nodes.get(node_id)
        if entry is None:
            self.nodes[node_id] = messages.node_state(self.prompt_id, node_id, state, value, maximum, display)
        else:
            entry.update(value=value, max=maximum, state=state)
            self._encoded.pop(node_id, None)
        self._dirty = True

    def _encoded_entries(self) -> list[str]:
        encoded = self._encoded
        out = []
        for node_id, entry in self.nodes.items():
            text = encoded.get(node_id)
            if text is None:
                text = encoded[node_id] = messages.node_state_text(node_id, entry)
            out.append(text)
        return out

    def _finish_running(self) -> None:
        if self.running is not None:
            entry = self.nodes[self.running]
            self._state(self.running, "finished", entry["max"], entry["max"])
            self.running = None

    def _state_frame(self, *, final: bool = False) -> list[Frame]:
        """The full state, now; the caller holds the lock. A slow client may lose intermediate states,
        never the final one."""
        self._dirty = False
        if not self.nodes or not self._wanted("progress_state"):
            return []
        self._entries_sent += len(self.nodes)
        text = messages.progress_state_text(self.prompt_id, self._encoded_entries())
        return [Frame(text=text, droppable=not final)]

    def _state_delay(self, now: float) -> float:
        """Seconds until the pending state may go (0: now): the interval, then the entry budget."""
        budget = STATE_BURST_ENTRIES + STATE_ENTRIES_PER_SECOND * (now - self._started)
        over = self._entries_sent + len(self.nodes) - budget
        return max(self._last_state + self.state_interval - now, over / STATE_ENTRIES_PER_SECOND, 0.0)

    def _coalesced_state(self) -> list[Frame]:
        """The full state if it may go now; otherwise a timer sends it later. Caller holds the lock."""
        if self._timer or not self._dirty or self._closed or not self._wanted("progress_state"):
            return []  # (a pending timer sends the state when it is due)
        now = self.clock()
        delay = self._state_delay(now)
        if delay <= 0:
            self._last_state = now
            return self._state_frame()
        if not self._timer:
            self._timer = self.hub.call_later_threadsafe(delay, self._on_timer)
        return []

    def _on_timer(self) -> None:
        """On the loop: send the pending state if it is due (frames still go through the inbox, in order)."""
        with self._lock:
            self._timer = False
            self._send(self._coalesced_state())

    # --- events --------------------------------------------------------------------------------
    def emit(self, event: ev.Event) -> None:
        if type(event) is ev.Executing:  # once per node: nothing for history, straight to the socket
            with self._lock:
                self._send(self._executing(event))
            return
        lifecycle = self.recorder.record(event, messages.now_ms())
        with self._lock:
            self._send(self._frames(event, lifecycle))

    def _frames(self, event: ev.Event, lifecycle: messages.Message | None) -> list[Frame]:
        if isinstance(event, ev.Executing):
            return self._executing(event)
        if isinstance(event, ev.Progress):
            return self._progress(event)
        if isinstance(event, ev.Executed):
            return self._message(
                messages.executed(self.prompt_id, event.node_id, event.output, event.display_node)
            )
        assert lifecycle is not None  # every other event is a lifecycle event
        if isinstance(event, ev.ExecutionCached):
            for node_id in event.nodes:
                self._state(node_id, "finished", 1, 1)
            return self._message(lifecycle) + self._coalesced_state()
        if isinstance(event, ev.ExecutionSuccess):
            self._finish_running()
            return self._final_state() + self._message(lifecycle)
        if isinstance(event, ev.ExecutionError):
            entry = self.nodes.get(event.node_id)
            if entry is not None:
                self._state(event.node_id, "error", entry["value"], entry["max"])
                self.running = None
            return self._final_state() + self._message(lifecycle)
        if isinstance(event, ev.ExecutionInterrupted):
            # The interrupted node did not finish; the message itself clears the UI's running state.
            self._closed = True
            return self._message(lifecycle)
        return self._message(lifecycle)  # execution_start

    def _final_state(self) -> list[Frame]:
        self._closed = True
        return self._state_frame(final=True)

    def _executing(self, event: ev.Executing) -> list[Frame]:
        if event.node_id is None:
            return self._message(messages.executing_done(self.prompt_id))
        self._finish_running()
        self.running = self.current_node = event.node_id
        self._state(event.node_id, "running", 0, 1, event.display_node)
        if not self._wanted("executing"):
            return self._coalesced_state()
        text = messages.executing_text(self.prompt_id, event.node_id, event.display_node)
        return [*self._coalesced_state(), Frame(text=text)]

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
            messages.progress(self.prompt_id, event.node_id, event.value, event.max), droppable=True
        )
        frames += self._coalesced_state()
        if event.preview and self._wanted("progress"):
            display = entry["display_node_id"] if entry else event.node_id
            metadata = messages.preview_metadata(self.prompt_id, event.node_id, display)
            frames.append(preview_frame(event.preview, event.preview_format, metadata))
        return frames

    def error(self, message: messages.Message) -> None:
        """Send an execution_error that happened outside any node (already recorded)."""
        with self._lock:
            self._closed = True
            self._send(self._message(message))

    def finish(self) -> None:
        """The closing `executing` with node null; call after history is written."""
        with self._lock:
            self._closed = True
            self.current_node = None
            self._send(self._message(messages.executing_done(self.prompt_id)))
