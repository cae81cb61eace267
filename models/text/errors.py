"""Typed errors for text encoders and tokenizers; each message says what is missing and where."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class TokenizerFilesMissing(FileNotFoundError):
    """No usable tokenizer files in any of the folders searched."""

    def __init__(self, kind: str, folders: Sequence[Path], needed: Sequence[str]) -> None:
        self.kind = kind
        self.folders = tuple(Path(f) for f in folders)
        self.needed = tuple(needed)
        where = " or ".join(str(f) for f in self.folders)
        super().__init__(
            f"{kind} tokenizer files not found: put {' + '.join(self.needed)} into {where} "
            f"(`python main.py fetch-tokenizers` downloads them when online)"
        )


class TokenizerDownloadError(RuntimeError):
    """fetch_tokenizers could not download a file (offline, blocked or unknown repository)."""


class MissingTextEncoderError(ValueError):
    """A prompt needs a text encoder (or tokenizer) that the TextEncoders handle does not hold."""
