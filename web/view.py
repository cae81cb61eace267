"""/view: files from output/, input/ and temp/ (optionally re-encoded), and /view_metadata of model files."""

from __future__ import annotations

import io
import mimetypes
import struct
from pathlib import Path
from typing import Any

from aiohttp import web

from .helpers import BadRequest, add_route, parse_json
from .paths import relative_name, safe_file
from .services import WebServices

FOLDER_TYPES = ("output", "input", "temp")
# Served as attachments so a saved page cannot run script in our origin.
_ACTIVE_TYPES = {
    "text/html",
    "application/xhtml+xml",
    "application/javascript",
    "text/javascript",
    "application/xml",
    "text/xml",
    "image/svg+xml",
}


def split_annotation(filename: str, default_type: str) -> tuple[str, str]:
    """`"name.png [temp]"` -> ("name.png", "temp"): ComfyUI's annotated names pick the folder."""
    for kind in FOLDER_TYPES:
        suffix = f" [{kind}]"
        if filename.endswith(suffix):
            return filename[: -len(suffix)], kind
    return filename, default_type


def _reencode(path: Path, preview: str | None, channel: str | None) -> tuple[bytes, str]:
    """Apply `preview=webp;90` / `jpeg;85` and `channel=rgb|a` with Pillow; returns (bytes, mime)."""
    from PIL import Image, UnidentifiedImageError

    try:
        image: Image.Image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadRequest(f"{path.name} is not an image that can be re-encoded: {exc}") from None
    if channel == "a":
        alpha = image.getchannel("A") if "A" in image.getbands() else Image.new("L", image.size, 255)
        out = Image.new("RGBA", image.size, (0, 0, 0, 0))
        out.putalpha(alpha)
        image, fmt, options = out, "PNG", dict[str, Any]()
    elif channel == "rgb" or preview:
        fmt, options = "PNG", dict[str, Any]()
        if preview:
            kind, _, quality = preview.partition(";")
            fmt = {"webp": "WEBP", "jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}.get(
                kind.strip().lower(), "WEBP"
            )
            try:
                options = {"quality": max(1, min(100, int(quality)))} if quality else {}
            except ValueError:
                raise BadRequest(f"preview quality must be an integer, got {quality!r}") from None
        if channel == "rgb" or fmt == "JPEG":
            image = image.convert("RGB")
        elif image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA")
    else:
        raise AssertionError("re-encoding needs preview or channel")
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt, **options)
    except (OSError, ValueError) as exc:  # e.g. a mode the chosen format cannot store
        raise BadRequest(f"{path.name} cannot be re-encoded as {fmt}: {exc}") from None
    return buffer.getvalue(), Image.MIME[fmt]


class ViewRoutes:
    def __init__(self, services: WebServices) -> None:
        self.services = services

    async def view(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("filename")
        if not raw:
            raise BadRequest("query parameter 'filename' is required")
        filename, kind = split_annotation(raw, request.query.get("type") or "output")
        if kind not in FOLDER_TYPES:
            raise BadRequest(f"type must be one of {', '.join(FOLDER_TYPES)}, got {kind!r}")
        name = relative_name(filename, what="filename")
        if len(name.parts) != 1:
            raise BadRequest(f"filename {filename!r} must not contain a folder; use 'subfolder'")
        path = safe_file(
            self.services.folder(kind), request.query.get("subfolder", ""), str(name), what="file"
        )
        if not path.is_file():
            raise BadRequest(f"{kind} file {filename!r} not found", status=404)
        preview = request.query.get("preview") or None
        channel = (request.query.get("channel") or "").lower() or None
        if channel not in (None, "rgba", "rgb", "a"):
            raise BadRequest(f"channel must be rgba, rgb or a, got {channel!r}")
        if preview or channel in ("rgb", "a"):
            data, mime = _reencode(path, preview, channel)
            return web.Response(
                body=data, content_type=mime, headers={"Content-Disposition": f'filename="{path.stem}"'}
            )
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        disposition = "inline"
        if mime in _ACTIVE_TYPES and not (
            mime == "image/svg+xml" and request.headers.get("Sec-Fetch-Dest") == "image"
        ):
            disposition = "attachment"
        return web.FileResponse(
            path,
            headers={"Content-Type": mime, "Content-Disposition": f'{disposition}; filename="{path.name}"'},
        )

    async def view_metadata(self, request: web.Request) -> web.Response:
        """The `__metadata__` of a .safetensors model file (`{}` when it has none)."""
        folder = request.match_info["folder_name"]
        filename = request.query.get("filename")
        if not filename:
            raise BadRequest("query parameter 'filename' is required")
        relative_name(filename, what="filename")
        if not filename.endswith(".safetensors"):
            raise BadRequest("metadata is only available for .safetensors files")
        catalog = self.services.model_paths
        if catalog is None or folder not in catalog.folders:
            raise BadRequest(f"unknown model folder {folder!r}", status=404)
        try:
            path = catalog.resolve(folder, filename)
        except (LookupError, ValueError, OSError):
            raise BadRequest(f"model file {filename!r} not found in {folder}", status=404) from None
        return web.json_response(read_safetensors_metadata(path))


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The header's `__metadata__`; 422 naming the file (never its folder) when the header is malformed."""
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            raise BadRequest(f"{path.name} is not a safetensors file", status=422)
        (length,) = struct.unpack("<Q", head)
        if length > 100 * 1024 * 1024:
            raise BadRequest(f"{path.name} has an implausible header of {length} bytes", status=422)
        try:
            header = parse_json(handle.read(length), what=f"{path.name}: safetensors header", max_depth=16)
        except BadRequest as exc:
            raise BadRequest(exc.message, status=422) from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def register_view_routes(app: web.Application, services: WebServices) -> None:
    routes = ViewRoutes(services)
    add_route(app, "GET", "/view", routes.view)
    add_route(app, "GET", "/view_metadata/{folder_name}", routes.view_metadata)
