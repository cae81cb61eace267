"""A bounded cache of parsed LoRA files, owned by the app services (one per running app).

Why not only the executor's output cache: that cache keys on a node's inputs, so a LoraLoader whose
strength changed runs again; this cache keeps the converted file (strength-1 patches) by
(path, mtime, size, model layout), so the re-run only re-strengthens patches and never re-reads
the file. An edited file (new mtime or size) is read again. Least recently used entries go first
once `max_files` or `max_bytes` is exceeded. Standard library only: importing it costs nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Generic, TypeVar

V = TypeVar("V")


class FileCache(Generic[V]):
    """value = load(path), remembered by (path, mtime_ns, size, extra key); LRU-bounded."""

    def __init__(self, max_files: int = 16, max_bytes: int = 4 << 30) -> None:
        if max_files < 1 or max_bytes < 0:
            raise ValueError(f"cache bounds must be positive, got {max_files} files, {max_bytes} bytes")
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # files read (tests and logs)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self._entries.values())

    def get(self, path: Path, extra: Hashable, load: Callable[[Path], V], size_of: Callable[[V], int]) -> V:
        stat = Path(path).stat()
        key = (str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size, extra)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        value = load(Path(path))
        self.loads += 1
        size = size_of(value)
        with self._lock:
            self._entries[key] = (value, size)
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and (
                len(self._entries) > self.max_files or self.bytes > self.max_bytes
            ):
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
