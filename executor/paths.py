"""Containment of user-given paths: one rule for the web routes and the nodes.

A name from a client or a prompt is joined to its folder and resolved (symlinks followed); the
result must be the folder itself or lie below it. The callers check the name's form first (the web
answers 400 for `..`, control characters and the like; nodes raise UnsafePathError) and map the
error here to their own (403, UnsafePathError).
"""

from __future__ import annotations

from pathlib import Path, PurePath


class PathEscapeError(ValueError):
    """The path resolves outside its folder, or cannot be resolved at all (a symlink loop)."""

    def __init__(self, message: str, *, unresolvable: bool = False) -> None:
        super().__init__(message)
        self.unresolvable = unresolvable


def resolve_within(root: Path | str, relative: str | PurePath) -> Path:
    """`root / relative`, resolved; raises PathEscapeError if that leaves `root`."""
    base = Path(root).resolve()
    try:
        target = (base / relative).resolve()
    except (OSError, RuntimeError):  # a symlink loop, or a link target too long to follow
        raise PathEscapeError("cannot be resolved", unresolvable=True) from None
    if target != base and not target.is_relative_to(base):
        raise PathEscapeError("resolves outside its folder")
    return target
