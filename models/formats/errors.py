"""Typed errors for checkpoint files: each names the file, what was expected and what was found."""

from __future__ import annotations

from pathlib import Path


class CheckpointFormatError(ValueError):
    """A file is unreadable, truncated, corrupt, or not of the family the caller asked for."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)  # as given (often absolute)
        self.problem = problem
        super().__init__(f"{shown_path(self.path)}: {problem}")


def shown_path(path: Path) -> str:
    """The file and the folder holding it (`vae/ae.safetensors`): messages reach the browser, which
    has no business knowing where the models folder lives."""
    return Path(*path.parts[-2:]).as_posix() if len(path.parts) >= 2 else path.as_posix()


class WrongFamilyError(CheckpointFormatError):
    """A readable checkpoint of another model family (e.g. a VAE given to the diffusion-model loader)."""

    def __init__(self, path: str | Path, expected: str, found: str, detail: str = "") -> None:
        self.expected = expected
        self.found = found
        extra = f" ({detail})" if detail else ""
        super().__init__(path, f"expected {expected}, found {found}{extra}")


class UnsupportedFormatError(CheckpointFormatError):
    """A recognised format that Fluxloom does not load (GGUF, bnb-nf4, FLUX.2, pickled .ckpt, ...)."""
