"""The WebSocket hub: connected clients, per-client bounded send queues, thread-safe dispatch.

Messages are encoded once (`Frame`) and handed to every target client's queue; one writer task per
client drains it. A slow client never blocks anyone: past `queue_limit` queued frames, droppable ones
(previews first, then progress) make room and droppable newcomers are shed; a client whose backlog of
essential frames exceeds `max_backlog_bytes` is disconnected (the frontend reconnects and refreshes from
/api/jobs). The backlog is bounded in bytes, not frames: a 10,000-node prompt legitimately queues
20,000 small `executing`/`executed` messages in a burst. The worker thread reaches the loop only through
`send_threadsafe`, which batches into `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, web

from executor import messages

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
_IMAGE_FORMATS = {"JPEG": 1, "PNG": 2}
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png"}


@dataclass(frozen=True)
class Frame:
    """One message, encoded once. Previews carry both binary layouts; each client gets the one it reads."""

    text: str | None = None
    binary: bytes | None = None  # type 1 (legacy) preview
    binary_meta: bytes | None = None  # type 4 preview with metadata
    droppable: bool = False
    preview: bool = False
    key: str | None = None  # a newer frame with the same key supersedes a queued one (status snapshots)

    @property
    def size(self) -> int:
        """Bytes it holds while queued (text counted per character, close enough for a bound)."""
        if self.text is not None:
            return len(self.text)
        return len(self.binary or b"") + len(self.binary_meta or b"")

    def payload(self, supports_metadata: bool) -> str | bytes:
        if self.text is not None:
            return self.text
        if supports_metadata and self.binary_meta is not None:
            return self.binary_meta
        assert self.binary is not None  # previews always carry the type-1 form
        return self.binary


def json_frame(kind: str, data: Mapping[str, Any], *, droppable: bool = False) -> Frame:
    return Frame(text=json.dumps({"type": kind, "data": data}, default=str), droppable=droppable)


def preview_frame(image: bytes, image_format: str, metadata: Mapping[str, Any]) -> Frame:
    """Binary preview: type 1 = u32 type, u32 format (1 JPEG, 2 PNG), bytes; type 4 = u32 type,
    u32 metadata length, metadata JSON, bytes. Big-endian."""
    fmt = image_format.upper()
    legacy = struct.pack(">II", PREVIEW_IMAGE, _IMAGE_FORMATS.get(fmt, 1)) + image
    meta = json.dumps({**metadata, "image_type": _MIME.get(fmt, "image/jpeg")}).encode()
    with_meta = struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + image
    return Frame(binary=legacy, binary_meta=with_meta, droppable=True, preview=True)


class Client:
    """One socket: its identity, declared feature flags and bounded outgoing queue."""

    def __init__(self, sid: str, ws: web.WebSocketResponse, limit: int, max_backlog_bytes: int) -> None:
        self.sid = sid
        self.ws = ws
        self.limit = limit
        self.max_backlog_bytes = max_backlog_bytes
        self.features: dict[str, Any] = {}
        self.frames: deque[Frame] = deque()
        self.backlog = 0  # bytes of the queued essential frames
        self.droppable = 0  # queued frames that may be dropped
        self.wakeup = asyncio.Event()
        self.closed = False
        self.dropped = 0
        self.writer: asyncio.Task[None] | None = None

    @property
    def supports_metadata(self) -> bool:
        return bool(self.features.get("supports_preview_metadata"))

    def push(self, frame: Frame) -> bool:
        """Queue a frame; False if the backlog is too large (the client must be dropped)."""
        if self.closed:
            return True
        if frame.key is not None and len(self.frames) >= self.limit // 2:
            # A backlog builds up: an older snapshot of the same kind is stale, drop it.
            for index, queued in enumerate(self.frames):
                if queued.key == frame.key:
                    self._remove(index)
                    break
        if len(self.frames) >= self.limit:
            if frame.droppable:
                self.dropped += 1  # a long queue sheds the newcomer when it is only progress or a preview
                return True
            self._make_room()
        if not frame.droppable:
            if self.backlog + frame.size > self.max_backlog_bytes:
                return False
            self.backlog += frame.size
        self.frames.append(frame)
        self.droppable += frame.droppable
        self.wakeup.set()
        return True

    def pop(self) -> Frame:
        frame = self.frames.popleft()
        self._forget(frame)
        return frame

    def _remove(self, index: int) -> None:
        self._forget(self.frames[index])
        del self.frames[index]

    def _forget(self, frame: Frame) -> None:
        if frame.droppable:
            self.droppable -= 1
        else:
            self.backlog -= frame.size

    def _make_room(self) -> None:
        """Drop the oldest preview, else the oldest droppable frame. Droppable frames only join a queue
        shorter than `limit`, so the scan stops within the first `limit` frames."""
        if not self.droppable:
            return
        for wanted in (lambda f: f.preview, lambda f: f.droppable):
            for index, queued in enumerate(self.frames):
                if index > self.limit:
                    break
                if wanted(queued):
                    self._remove(index)
                    self.dropped += 1
                    return


class Hub:
    """Connected clients by sid. `dispatch`/`send` run on the loop; `send_threadsafe` from any thread."""

    def __init__(self, queue_limit: int = 512, max_backlog_bytes: int = 64 << 20) -> None:
        self.queue_limit = queue_limit
        self.max_backlog_bytes = max_backlog_bytes
        self.clients: dict[str, Client] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        # Frames from other threads wait here; one scheduled flush delivers every batch queued so far.
        self._inbox: deque[tuple[list[Frame], str | None]] = deque()
        self._inbox_lock = threading.Lock()
        self._flush_scheduled = False

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def detach(self) -> None:
        self.loop = None

    # --- connections ---------------------------------------------------------------------------
    def connect(self, sid: str, ws: web.WebSocketResponse) -> Client:
        """Register a socket; a previous socket with the same sid stops receiving (it is not closed: two
        tabs sharing a clientId, e.g. a duplicated tab, would otherwise take turns reconnecting forever)."""
        old = self.clients.pop(sid, None)
        if old is not None:
            log.info("websocket %s replaced by a new connection with the same clientId", sid)
            self.disconnect(old)
        client = Client(sid, ws, self.queue_limit, self.max_backlog_bytes)
        client.writer = asyncio.get_running_loop().create_task(self._write(client))
        self.clients[sid] = client
        return client

    def disconnect(self, client: Client) -> None:
        if self.clients.get(client.sid) is client:
            del self.clients[client.sid]
        client.closed = True
        client.wakeup.set()

    def _close(self, client: Client, reason: str) -> None:
        log.info("closing websocket %s: %s", client.sid, reason)
        self.disconnect(client)
        if not client.ws.closed:
            asyncio.get_running_loop().create_task(
                client.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=reason.encode()[:120])
            )

    async def _write(self, client: Client) -> None:
        ws = client.ws
        try:
            while True:
                while client.frames and not client.closed:
                    payload = client.pop().payload(client.supports_metadata)
                    if isinstance(payload, str):
                        await ws.send_str(payload)
                    else:
                        await ws.send_bytes(payload)
                if client.closed:
                    return
                client.wakeup.clear()
                await client.wakeup.wait()
        except (ConnectionError, RuntimeError) as exc:  # peer went away mid-send
            log.debug("websocket %s send failed: %s", client.sid, exc)
            self.disconnect(client)

    async def close_all(self) -> None:
        for client in list(self.clients.values()):
            self.disconnect(client)
            if not client.ws.closed:
                await client.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    def has_clients(self) -> bool:
        """Whether any socket is connected (any thread: a frame nobody receives need not be built)."""
        return bool(self.clients)

    def is_connected(self, sid: str) -> bool:
        return sid in self.clients

    # --- sending -------------------------------------------------------------------------------
    def dispatch(self, frames: Iterable[Frame], sid: str | None = None) -> None:
        """On the loop: send frames to one client (`sid`) or to everyone (`sid` None)."""
        targets = (
            [self.clients[sid]]
            if sid is not None and sid in self.clients
            else ([] if sid is not None else list(self.clients.values()))
        )
        for frame in frames:
            for client in targets:
                if not client.push(frame):
                    self._close(client, f"client too slow ({len(client.frames)} messages waiting)")

    def send(self, kind: str, data: Mapping[str, Any], sid: str | None = None) -> None:
        self.dispatch([json_frame(kind, data)], sid)

    def send_threadsafe(self, frames: list[Frame], sid: str | None = None) -> None:
        """From any thread (the worker): deliver on the loop, in order; a no-op once the loop is gone.

        Batches that arrive while a flush is pending ride along with it, so a burst of events costs one
        loop wake-up instead of one each.
        """
        loop = self.loop
        if loop is None:
            return
        with self._inbox_lock:
            self._inbox.append((frames, sid))
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        try:
            loop.call_soon_threadsafe(self._flush)
        except RuntimeError:  # loop closed during shutdown
            pass

    def send_json_threadsafe(self, kind: str, data: Mapping[str, Any], sid: str | None = None) -> None:
        """ComfyUI's `send_sync` for code on other threads (custom nodes): one JSON message."""
        self.send_threadsafe([json_frame(kind, data)], sid)

    def _flush(self) -> None:
        with self._inbox_lock:
            batches = list(self._inbox)
            self._inbox.clear()
            self._flush_scheduled = False
        for frames, sid in batches:
            self.dispatch(frames, sid)

    def call_later_threadsafe(self, delay: float, callback: Callable[[], None]) -> bool:
        """From any thread: run `callback` on the loop after `delay` seconds. False if there is no loop."""
        loop = self.loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(loop.call_later, delay, callback)
        except RuntimeError:  # loop closed during shutdown
            return False
        return True

    def status_frame(self, queue_remaining: int, sid: str | None = None) -> Frame:
        """`status`; the broadcast one is keyed, so a newer snapshot supersedes a queued one."""
        frame = json_frame(*messages.status(queue_remaining, sid))
        return frame if sid is not None else Frame(text=frame.text, key="status")
