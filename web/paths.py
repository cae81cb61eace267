"""Keeping file routes inside their folder: relative-name checks, resolution, filename sanitizing.

Names are checked in every form a client might smuggle them in (as given and URL-decoded up to three
times): NUL and control characters, backslashes, absolute paths, drive letters, `..` segments, text
that is not Unicode (unpaired surrogates) and names too long for the file system are refused with
400. A name that passes but resolves outside the folder (a symlink) is refused with 403. Messages name
paths relative to their folder, never the absolute path or a symlink's target.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from executor.paths import PathEscapeError, resolve_within

from .helpers import BadRequest

_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME_BYTES = 255  # one path segment (NAME_MAX on common file systems)
MAX_PATH_BYTES = 1024  # a whole relative path


def shown_name(name: str, limit: int = 120) -> str:
    """A client-supplied name for an error message: printable, cut to `limit` characters."""
    text = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return repr(text if len(text) <= limit else f"{text[:limit]}...")


def _decoded_forms(name: str) -> list[str]:
    forms = [name]
    for _ in range(3):
        decoded = unquote(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    return forms


def relative_name(name: str, *, what: str, allow_empty: bool = False) -> PurePosixPath:
    """A safe relative path from a client-supplied name ('/'-separated). Raises BadRequest (400)."""
    if not isinstance(name, str):
        raise BadRequest(f"{what} must be a string")
    if not name:
        if allow_empty:
            return PurePosixPath()
        raise BadRequest(f"{what} is empty")
    shown = shown_name(name)
    try:
        encoded = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadRequest(f"{what} {shown} is not Unicode text") from None
    if encoded > MAX_PATH_BYTES:
        raise BadRequest(f"{what} {shown} is too long ({encoded} bytes; at most {MAX_PATH_BYTES})")
    for form in _decoded_forms(name):
        if _CONTROL.search(form):
            raise BadRequest(f"{what} {shown} contains control characters")
        if "\\" in form:
            raise BadRequest(f"{what} {shown} contains a backslash")
        if form.startswith("/") or _DRIVE.match(form):
            raise BadRequest(f"{what} {shown} is absolute; give a path relative to its folder")
        if ".." in PurePosixPath(form).parts:
            raise BadRequest(f"{what} {shown} leaves its folder ('..')")
        try:
            longest = max(len(part.encode("utf-8")) for part in form.split("/"))
        except UnicodeEncodeError:
            raise BadRequest(f"{what} {shown} is not Unicode text") from None
        if longest > MAX_NAME_BYTES:
            raise BadRequest(
                f"{what} {shown} has a name of {longest} bytes; at most {MAX_NAME_BYTES} are allowed"
            )
    # Decoding stops where the client stopped encoding: the last form is the name on disk.
    return PurePosixPath(*[p for p in PurePosixPath(name).parts if p not in ("", ".")])


def resolve_inside(root: Path, relative: PurePosixPath, *, what: str) -> Path:
    """`root / relative`, refusing (403) anything that resolves outside `root` (symlinks included)."""
    try:
        return resolve_within(root, relative)
    except PathEscapeError as exc:
        if exc.unresolvable:
            raise BadRequest(
                f"{what} {shown_name(relative.as_posix())} cannot be resolved", status=403
            ) from None
        raise BadRequest(f"{what} resolves outside its folder", status=403) from None


def safe_file(root: Path, *parts: str, what: str) -> Path:
    """Resolve '/'-joined client parts (e.g. subfolder, filename) inside `root`."""
    relative = PurePosixPath()
    for part in parts:
        relative = relative / relative_name(part, what=what, allow_empty=True)
    return resolve_inside(root, relative, what=what)


def sanitize_filename(name: str | None, *, what: str = "filename") -> str:
    """The basename of an uploaded file's name (URL-decoded), without control characters; refuses '', '.', '..'."""
    if not name:
        raise BadRequest(f"{what} is missing")
    # Some clients percent-encode the name in Content-Disposition; take the basename of what they meant.
    base = re.split(r"[\\/]", _decoded_forms(name)[-1])[-1]
    base = _CONTROL.sub("", base).strip()
    if base in ("", ".", "..") or _DRIVE.match(base):
        raise BadRequest(f"{what} {shown_name(name)} is not a usable file name")
    try:
        base.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} {shown_name(name)} is not Unicode text") from None
    if len(base.encode("utf-8")) > MAX_NAME_BYTES:
        raise BadRequest(f"{what} {shown_name(name)} is longer than {MAX_NAME_BYTES} bytes")
    return base
