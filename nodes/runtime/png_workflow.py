"""Workflows embedded in PNG files: the `prompt` (API JSON) and `workflow` (UI JSON) text chunks.

SaveImage writes both as tEXt chunks; other tools use iTXt or zTXt, which Pillow decodes the same way.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PngWorkflowError(ValueError):
    """The file is not a PNG, or carries no readable workflow."""


@dataclass(frozen=True)
class PngWorkflow:
    """What a PNG carries: the API prompt and/or the UI workflow (None when absent or unreadable)."""

    prompt: dict[str, Any] | None
    workflow: dict[str, Any] | None

    def best(self) -> dict[str, Any]:
        """The embedded API prompt when present (it is what ran), else the UI workflow."""
        if self.prompt is not None:
            return self.prompt
        if self.workflow is not None:
            return self.workflow
        raise PngWorkflowError("the PNG carries no 'prompt' or 'workflow' text chunk")


def is_png(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:
        return False


def _json_chunk(text: dict[str, str], key: str, path: Path) -> dict[str, Any] | None:
    raw = text.get(key)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        log.warning("%s: the %r chunk is not JSON (%s); ignoring it", path, key, exc)
        return None
    if not isinstance(value, dict):
        log.warning("%s: the %r chunk is %s, not an object; ignoring it", path, key, type(value).__name__)
        return None
    return value


def read_png_workflow(path: Path) -> PngWorkflow:
    """Read the `prompt` and `workflow` chunks of a PNG. Raises PngWorkflowError for a non-PNG file."""
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise PngWorkflowError(f"{path} is a {image.format} image, not a PNG")
            text = dict(getattr(image, "text", {}) or {})
    except UnidentifiedImageError:
        raise PngWorkflowError(f"{path} is not an image Pillow can read") from None
    return PngWorkflow(_json_chunk(text, "prompt", path), _json_chunk(text, "workflow", path))
