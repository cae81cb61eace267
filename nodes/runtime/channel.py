"""The line from node code to the connected clients (WebSocket), outside the executor's events.

ComfyUI lets nodes push messages themselves (`PromptServer.instance.send_sync`) and
`SaveImageWebsocket` sends images as binary frames. main.py connects the web hub here; without a
server (headless runs, tests) nothing is connected and sends are dropped with a debug log.
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

SendJson = Callable[[str, Mapping[str, Any], "str | None"], None]
SendBytes = Callable[[bytes, "str | None"], None]


@dataclass
class ClientChannel:
    """`send_json(kind, data, sid)` and `send_bytes(frame, sid)` deliver from any thread; sid None = everyone.

    `current_client()` is the client id of the prompt running now (None when there is none).
    """

    send_json_fn: SendJson | None = None
    send_bytes_fn: SendBytes | None = None
    current_client_fn: Callable[[], str | None] | None = None

    def connect(
        self, send_json: SendJson, send_bytes: SendBytes, current_client: Callable[[], str | None]
    ) -> None:
        self.send_json_fn, self.send_bytes_fn, self.current_client_fn = send_json, send_bytes, current_client

    def disconnect(self) -> None:
        self.send_json_fn = self.send_bytes_fn = self.current_client_fn = None

    @property
    def connected(self) -> bool:
        return self.send_json_fn is not None

    def current_client(self) -> str | None:
        return self.current_client_fn() if self.current_client_fn is not None else None

    def send_json(self, kind: str, data: Mapping[str, Any], sid: str | None = None) -> None:
        if self.send_json_fn is None:
            log.debug("no client channel: %s message dropped", kind)
            return
        self.send_json_fn(kind, data, sid)

    def send_bytes(self, frame: bytes, sid: str | None = None) -> None:
        if self.send_bytes_fn is None:
            log.debug("no client channel: binary message of %d bytes dropped", len(frame))
            return
        self.send_bytes_fn(bytes(frame), sid)


PREVIEW_IMAGE = 1  # ComfyUI's BinaryEventTypes.PREVIEW_IMAGE
_IMAGE_FORMATS = {"JPEG": 1, "PNG": 2, "WEBP": 3}


def image_frame(image_type: str | None, image: Any, max_size: int | None = None) -> bytes:
    """ComfyUI's binary image frame: u32 1, u32 format (1 JPEG, 2 PNG), encoded image (big-endian).

    `image` is a PIL image, fitted into `max_size` x `max_size` when given.
    """
    fmt = str(image_type or "PNG").upper()
    if max_size:
        from PIL import Image, ImageOps

        image = ImageOps.contain(image, (int(max_size), int(max_size)), Image.Resampling.BILINEAR)
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    buffer.write(struct.pack(">II", PREVIEW_IMAGE, _IMAGE_FORMATS.get(fmt, 1)))
    image.save(buffer, format=fmt, quality=95, compress_level=1)
    return buffer.getvalue()


# The one channel of this process (like the WebSocket hub it stands for).
CHANNEL = ClientChannel()
