"""User-given file names for the image nodes: safe resolution inside a folder, `[output]`-style
annotations, input listings and ComfyUI's `{prefix}_{counter:05}_` save names.

Every path that comes from a prompt goes through `safe_resolve`, so `..`, absolute paths and
symlinks can never reach outside the folder they name.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from executor.paths import PathEscapeError, resolve_within

FOLDER_KINDS = ("input", "output", "temp")
# Extensions Pillow reads that ComfyUI's LoadImage lists (it keeps files whose mime type is image/*).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jfif", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_ANNOTATION = re.compile(r"^(?P<name>.*?)\s*\[(?P<kind>input|output|temp)\]$")


class UnsafePathError(ValueError):
    """A user-given path would leave its folder (`..`, absolute path, symlink out) or is malformed."""


def folder_for(settings: Any, kind: str) -> Path:
    """The folder of a ComfyUI folder type ("input", "output", "temp") from Settings."""
    if kind not in FOLDER_KINDS:
        raise ValueError(f"unknown folder type {kind!r}; expected one of {FOLDER_KINDS}")
    return Path(getattr(settings, f"{kind}_dir"))


def save_folder(settings: Any, kind: str) -> Path:
    """Where nodes save files of a folder type: `folder_for`, or on a data-parallel rank other than 0
    its scratch folder (`Settings.scratch_dir`), so each file reaches the user once (from rank 0)."""
    scratch = getattr(settings, "scratch_dir", None)
    return folder_for(settings, kind) if scratch is None else Path(scratch) / kind


def _is_absolute(relative: str) -> bool:
    # Windows forms too ("C:\\x", "\\\\server\\x"): a prompt may come from any client.
    return (
        PurePosixPath(relative).is_absolute()
        or PureWindowsPath(relative).is_absolute()
        or bool(PureWindowsPath(relative).drive)
    )


def safe_resolve(root: Path | str, relative: str, *, what: str = "path") -> Path:
    """`root / relative`, resolved (symlinks followed), guaranteed to lie inside `root`.

    Raises UnsafePathError naming `what` and the value for empty names, NUL bytes, absolute paths
    and anything (`..`, a symlink) that resolves outside `root`. The result need not exist.
    """
    if not isinstance(relative, str):
        raise UnsafePathError(f"{what} must be a string, got {type(relative).__name__}")
    if relative.strip() == "" or "\x00" in relative:
        raise UnsafePathError(f"{what} {relative!r} is empty or contains a NUL byte")
    if _is_absolute(relative):
        raise UnsafePathError(f"{what} {relative!r} is an absolute path; give a name inside the folder")
    try:
        return resolve_within(root, relative.replace("\\", "/"))
    except PathEscapeError as exc:
        raise UnsafePathError(f"{what} {relative!r} {exc} ({Path(root).resolve()})") from None


def split_annotation(name: str, default_kind: str = "input") -> tuple[str, str]:
    """`"x.png [output]"` -> `("x.png", "output")`; an unannotated name gets `default_kind`."""
    match = _ANNOTATION.match(name)
    if match is None:
        return name, default_kind
    return match.group("name"), match.group("kind")


def resolve_annotated(name: str, settings: Any, default_kind: str = "input") -> Path:
    """The file an annotated image name (`sub/x.png`, `x.png [temp]`, ...) refers to, kept inside its folder."""
    relative, kind = split_annotation(name, default_kind)
    return safe_resolve(folder_for(settings, kind), relative, what=f"image name {name!r}")


def list_input_images(input_dir: Path | str) -> list[str]:
    """Sorted names of the image files directly in `input_dir` (what LoadImage offers); [] if it is missing.

    Symlinks that point outside the folder are left out: they could not be loaded.
    """
    root = Path(input_dir)
    if not root.is_dir():
        return []
    names = []
    for entry in os.scandir(root):
        if Path(entry.name).suffix.lower() not in IMAGE_EXTENSIONS or not entry.is_file():
            continue
        try:
            safe_resolve(root, entry.name)
        except UnsafePathError:
            continue
        names.append(entry.name)
    return sorted(names)


def expand_prefix_variables(prefix: str, width: int, height: int, now: time.struct_time | None = None) -> str:
    """Replace ComfyUI's server-side `%width%`, `%height%`, `%year%` ... `%second%` in a filename prefix."""
    if "%" not in prefix:
        return prefix
    now = now or time.localtime()
    values = {
        "width": str(width),
        "height": str(height),
        "year": str(now.tm_year),
        "month": f"{now.tm_mon:02}",
        "day": f"{now.tm_mday:02}",
        "hour": f"{now.tm_hour:02}",
        "minute": f"{now.tm_min:02}",
        "second": f"{now.tm_sec:02}",
    }
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", value)
    return prefix


@dataclass(frozen=True)
class SaveTarget:
    """Where a batch of images goes: `folder / f"{name}_{counter:05}_.png"`; `subfolder` is relative, '/'-separated."""

    folder: Path
    subfolder: str
    name: str
    counter: int

    def filename(self, counter: int, batch_number: int, extension: str = "png") -> str:
        return f"{self.name.replace('%batch_num%', str(batch_number))}_{counter:05}_.{extension}"


def highest_counter(folder: Path, name: str) -> int:
    """The largest N among files named `{name}_N...` in `folder` (0 if none), as ComfyUI counts them."""
    if not folder.is_dir():
        return 0
    pattern = re.compile(re.escape(name) + r"_(\d+)(?:_|\.|$)")
    best = 0
    for entry in os.scandir(folder):
        match = pattern.match(entry.name)
        if match:
            best = max(best, int(match.group(1)))
    return best


def save_target(root: Path | str, filename_prefix: str, width: int = 0, height: int = 0) -> SaveTarget:
    """Resolve a SaveImage prefix (`name` or `sub/dir/name`) inside `root`, create the folder, pick the next counter.

    Raises UnsafePathError when the prefix would leave `root` or names no file.
    """
    prefix = expand_prefix_variables(filename_prefix, width, height)
    parts = PurePosixPath(prefix.replace("\\", "/"))
    if not parts.name or parts.name in (".", ".."):
        raise UnsafePathError(f"filename_prefix {filename_prefix!r} does not end in a file name")
    target = safe_resolve(root, str(parts), what=f"filename_prefix {filename_prefix!r}")
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    # Re-check after mkdir: a symlink created meanwhile must not redirect the save.
    folder = safe_resolve(
        root, str(parts.parent) if str(parts.parent) != "." else ".", what="filename_prefix"
    )
    base = Path(root).resolve()
    subfolder = "" if folder == base else folder.relative_to(base).as_posix()
    return SaveTarget(folder, subfolder, parts.name, highest_counter(folder, parts.name) + 1)
