"""The cancel token a running prompt checks: set from any thread, read between nodes and by nodes."""

from __future__ import annotations

import threading


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
