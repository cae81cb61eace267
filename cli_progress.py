"""Command-line view of execution events: one tqdm bar per node with progress, saved files listing."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from executor import events as ev
from settings import Settings


class ProgressBars:
    """An EventSink drawing a tqdm bar for each node that reports progress."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None
        self._node: str | None = None

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def emit(self, event: ev.Event) -> None:
        if isinstance(event, ev.Executing):
            self._close()
            self._node = event.node_id
        elif isinstance(event, ev.Progress):
            if self._bar is None or self._bar.total != event.max:
                self._close()
                self._bar = tqdm(total=event.max, desc=f"node {event.node_id}", file=sys.stderr, leave=False)
            self._bar.n = event.value
            self._bar.refresh()


_FOLDERS = {"output": "output_dir", "temp": "temp_dir", "input": "input_dir"}


def saved_files(outputs: Mapping[str, Mapping[str, Any]], settings: Settings) -> Iterator[Path]:
    """Paths of the files listed in UI outputs (`images` entries with filename/subfolder/type)."""
    for ui in outputs.values():
        for item in ui.get("images", ()) or ():
            if not isinstance(item, Mapping) or item.get("type", "output") != "output":
                continue
            folder = getattr(settings, _FOLDERS["output"])
            yield Path(folder) / item.get("subfolder", "") / item["filename"]
