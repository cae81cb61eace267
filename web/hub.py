"""The WebSocket hub: connected clients, per-client bounded send queues, thread-safe dispatch.

Messages are encoded once (`Frame`) and handed to every target client's queue; one writer task per
client drains it. A slow client never blocks anyone: once its queue holds `shed_bytes`, the previews
and progress messages in it are dropped and new ones are not queued; a client whose essential frames
alone exceed `max_backlog_bytes` is disconnected (the frontend reconnects and refreshes from
/api/jobs). Both bounds are in bytes, not frames: a 10,000-node prompt legitimately queues 10,000
small `executing` messages in one burst. The worker thread reaches the loop only through
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

from .ws_wire import BATCH_BYTES, write_batch

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
_IMAGE_FORMATS = {"JPEG": 1, "PNG": 2}
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png"}


@dataclass(slots=True)
class Frame:
    """One message, encoded once and never changed after (not frozen only because a frozen dataclass
    costs three times as much to build, once per message). Previews carry both binary layouts; each
    client gets the one it reads."""

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


# One encoder for every message (json.dumps with `default` builds a new encoder per call). Values a
# third-party node put in its UI output that JSON cannot hold are sent as their text.
_encode = json.JSONEncoder(default=str).encode


def json_frame(kind: str, data: Mapping[str, Any], *, droppable: bool = False) -> Frame:
    return Frame(text=_encode({"type": kind, "data": data}), droppable=droppable)


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

    def __init__(
        self,
        sid: str,
        ws: web.WebSocketResponse,
        shed_bytes: int,
        max_backlog_bytes: int,
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        self.sid = sid
        self.ws = ws
        self.transport = transport  # the upgraded connection's socket: frames are written to it directly
        self.shed_bytes = shed_bytes
        self.max_backlog_bytes = max_backlog_bytes
        self.features: dict[str, Any] = {}
        self.frames: deque[Frame] = deque()
        self.queued = 0  # bytes of all queued frames
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
        """Queue a frame; False if the essential backlog is too large (the client must be dropped)."""
        if self.closed:
            return True
        if frame.key is not None and self.queued >= self.shed_bytes // 2:
            # A backlog builds up: an older snapshot of the same kind is stale, drop it.
            for index, queued in enumerate(self.frames):
                if queued.key == frame.key:
                    self._forget(queued)
                    del self.frames[index]
                    break
        if self.queued >= self.shed_bytes:
            if frame.droppable:
                self.dropped += 1  # a long queue sheds the newcomer when it is only progress or a preview
                return True
            if self.droppable:
                self._drop_droppable()
        size = frame.size
        if not frame.droppable:
            if self.backlog + size > self.max_backlog_bytes:
                return False
            self.backlog += size
        self.frames.append(frame)
        self.queued += size
        self.droppable += frame.droppable
        self.wakeup.set()
        return True

    def pop(self) -> Frame:
        frame = self.frames.popleft()
        self._forget(frame)
        return frame

    def _forget(self, frame: Frame) -> None:
        size = frame.size
        self.queued -= size
        if frame.droppable:
            self.droppable -= 1
        else:
            self.backlog -= size

    def _drop_droppable(self) -> None:
        """Over the limit: every queued preview and progress message goes, in one pass."""
        kept = deque(f for f in self.frames if not f.droppable)
        self.dropped += len(self.frames) - len(kept)
        self.frames = kept
        self.queued = self.backlog
        self.droppable = 0


async def _send_each(ws: web.WebSocketResponse, payloads: list[str | bytes]) -> None:
    for payload in payloads:
        if isinstance(payload, str):
            await ws.send_str(payload)
        else:
            await ws.send_bytes(payload)


class Hub:
    """Connected clients by sid. `dispatch`/`send` run on the loop; `send_threadsafe` from any thread."""

    def __init__(
        self, shed_bytes: int = 8 << 20, max_backlog_bytes: int = 64 << 20, flush_delay_s: float = 0.005
    ) -> None:
        self.shed_bytes = shed_bytes
        self.max_backlog_bytes = max_backlog_bytes
        self.flush_delay_s = flush_delay_s
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
    def connect(
        self, sid: str, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None = None
    ) -> Client:
        """Register a socket; a previous socket with the same sid stops receiving (it is not closed: two
        tabs sharing a clientId, e.g. a duplicated tab, would otherwise take turns reconnecting forever)."""
        old = self.clients.pop(sid, None)
        if old is not None:
            log.info("websocket %s replaced by a new connection with the same clientId", sid)
            self.disconnect(old)
        client = Client(sid, ws, self.shed_bytes, self.max_backlog_bytes, transport)
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
        """Drain the client's queue in batches of whole frames, one socket write each (ws_wire)."""
        try:
            while True:
                while client.frames and not client.closed:
                    payloads: list[str | bytes] = []
                    size = 0
                    while client.frames and size < BATCH_BYTES:
                        payload = client.pop().payload(client.supports_metadata)
                        payloads.append(payload)
                        size += len(payload)
                    if client.transport is not None:
                        await write_batch(client.transport, payloads)
                    else:  # a socket object without its connection (a stand-in): message by message
                        await _send_each(client.ws, payloads)
                    await asyncio.sleep(0)  # other clients and requests get the loop between batches
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

        The flush runs `flush_delay_s` after the first batch; batches that arrive meanwhile ride along,
        so a burst of events (a fast node every few microseconds) costs one loop wake-up per window
        instead of a wake-up, a self-pipe write and a GIL hand-over per event.
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
            loop.call_soon_threadsafe(loop.call_later, self.flush_delay_s, self._flush)
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
