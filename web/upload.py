"""/upload/image and /upload/mask: multipart uploads into input/ (or temp/, output/), never outside.

Naming follows ComfyUI: an existing file with the same name and content is reused; otherwise
`name (1).ext`, `name (2).ext`, ... unless `overwrite` is set. The body size limit
(`--max-upload-size`) is enforced by aiohttp before the handler reads anything (413).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from .helpers import BadRequest, add_route, clip, form_bool, within_body_timeout
from .paths import relative_name, safe_file, sanitize_filename
from .services import WebServices
from .view import FOLDER_TYPES, split_annotation


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file + rename, so readers never see half a file.

    A folder on the way that is a file answers 409 (the message names no absolute path).
    """
    make_folder(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise BadRequest(
            f"cannot create the folder {folder.name!r}: a file is in the way", status=409
        ) from None


def choose_name(folder: Path, filename: str, data: bytes, overwrite: bool) -> str:
    """The name to store `data` under in `folder` (see module docstring)."""
    target = folder / filename
    if overwrite or not target.exists():
        return filename
    if target.is_file() and _file_digest(target) == _digest(data):
        return filename
    stem, dot, ext = filename.rpartition(".")
    if not dot:
        stem, ext = filename, ""
    for index in range(1, 10_000):
        candidate = f"{stem} ({index}){'.' + ext if dot else ''}"
        path = folder / candidate
        if not path.exists() or (path.is_file() and _file_digest(path) == _digest(data)):
            return candidate
    raise BadRequest(f"too many files named like {filename!r}", status=409)


class UploadRoutes:
    def __init__(self, services: WebServices) -> None:
        self.services = services

    async def _form(self, request: web.Request) -> dict[str, Any]:
        if not request.content_type.startswith("multipart/"):
            raise BadRequest(
                f"expected a multipart/form-data upload, got {request.content_type or 'no body'}"
            )
        try:
            form = await within_body_timeout(request, request.post())
        except (ValueError, AssertionError, LookupError, TypeError) as exc:
            raise BadRequest(
                f"malformed multipart body: {clip(str(exc) or type(exc).__name__, 200)}"
            ) from None
        upload = form.get("image")
        if not isinstance(upload, web.FileField):
            raise BadRequest("the form needs a file field named 'image'")
        kind = str(form.get("type") or "input")
        if kind not in FOLDER_TYPES:
            raise BadRequest(f"type must be one of {', '.join(FOLDER_TYPES)}, got {kind!r}")
        subfolder = str(form.get("subfolder") or "")
        relative_name(subfolder, what="subfolder", allow_empty=True)
        return {
            "upload": upload,
            "kind": kind,
            "subfolder": subfolder,
            "overwrite": form_bool(form.get("overwrite")),
            "form": form,
        }

    def _store(self, kind: str, subfolder: str, filename: str, data: bytes, overwrite: bool) -> web.Response:
        folder = safe_file(self.services.folder(kind), subfolder, what="subfolder")
        if folder.exists() and not folder.is_dir():
            raise BadRequest(f"subfolder {subfolder!r} is a file", status=409)
        name = choose_name(folder, filename, data, overwrite)
        path = safe_file(folder, name, what="file")
        if path.is_dir():
            raise BadRequest(f"{name!r} is a folder", status=409)
        atomic_write(path, data)
        return web.json_response({"name": name, "subfolder": subfolder, "type": kind})

    async def image(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        upload: web.FileField = form["upload"]
        filename = sanitize_filename(upload.filename)
        return self._store(form["kind"], form["subfolder"], filename, upload.file.read(), form["overwrite"])

    async def mask(self, request: web.Request) -> web.Response:
        """The uploaded image's alpha becomes the alpha of `original_ref`'s image; saved as PNG."""
        from PIL import Image, UnidentifiedImageError

        form = await self._form(request)
        raw_ref = form["form"].get("original_ref")
        try:
            ref = json.loads(str(raw_ref)) if raw_ref is not None else None
        except json.JSONDecodeError as exc:
            raise BadRequest(f"original_ref is not valid JSON: {exc}") from None
        if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
            raise BadRequest("original_ref must be a JSON object with a 'filename'")
        ref_name, ref_kind = split_annotation(ref["filename"], str(ref.get("type") or "input"))
        if ref_kind not in FOLDER_TYPES:
            raise BadRequest(f"original_ref type must be one of {', '.join(FOLDER_TYPES)}, got {ref_kind!r}")
        original_path = safe_file(
            self.services.folder(ref_kind), str(ref.get("subfolder") or ""), ref_name, what="original_ref"
        )
        if not original_path.is_file():
            raise BadRequest(f"original image {clip(repr(ref['filename']), 120)} not found", status=404)
        upload: web.FileField = form["upload"]
        try:
            original = Image.open(original_path).convert("RGBA")
            mask = Image.open(upload.file)
            mask.load()
            alpha = mask.getchannel("A") if "A" in mask.getbands() else mask.convert("L")
            original.putalpha(alpha.resize(original.size, Image.Resampling.LANCZOS))
            buffer = io.BytesIO()
            original.save(buffer, format="PNG")
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise BadRequest(f"cannot combine the images: {clip(str(exc), 200)}") from None
        filename = sanitize_filename(upload.filename)
        return self._store(form["kind"], form["subfolder"], filename, buffer.getvalue(), form["overwrite"])


def register_upload_routes(app: web.Application, services: WebServices) -> None:
    routes = UploadRoutes(services)
    add_route(app, "POST", "/upload/image", routes.image)
    add_route(app, "POST", "/upload/mask", routes.mask)
