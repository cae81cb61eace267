"""CLIP-L and T5 tokenizers from local files only, and the download that puts them there.

Where they are looked for (first hit wins):
- a diffusers FLUX folder: `tokenizer/` (CLIP) and `tokenizer_2/` (T5);
- `<models_dir>/tokenizers/clip_l/` and `<models_dir>/tokenizers/t5xxl/`.
CLIP needs `vocab.json` + `merges.txt`; T5 needs `tokenizer.json` or `spiece.model`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from transformers import CLIPTokenizer, T5Tokenizer

from .errors import TokenizerDownloadError, TokenizerFilesMissing
from .tiny_tokenizers import write_tiny_tokenizers

log = logging.getLogger(__name__)

__all__ = [
    "CLIP_REPO",
    "T5_REPO",
    "clip_tokenizer_dirs",
    "fetch_tokenizers",
    "load_clip_tokenizer",
    "load_flux_tokenizers",
    "load_t5_tokenizer",
    "t5_tokenizer_dirs",
    "write_tiny_tokenizers",
]

CLIP_FILES = ("vocab.json", "merges.txt")
T5_FILE_CHOICES = (("tokenizer.json",), ("spiece.model",))
CLIP_REPO = "openai/clip-vit-large-patch14"
T5_REPO = "google/t5-v1_1-xxl"
CLIP_FETCH = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
T5_FETCH = ("spiece.model", "tokenizer_config.json", "special_tokens_map.json")
# Prompts are chunked by us, never truncated by the tokenizer; a huge limit silences its length warning.
_NO_LIMIT = 1 << 30


def clip_tokenizer_dirs(models_dir: Path | None = None, diffusers_dir: Path | None = None) -> list[Path]:
    """Folders searched for the CLIP tokenizer, in order."""
    return _dirs(models_dir, diffusers_dir, "clip_l", "tokenizer")


def t5_tokenizer_dirs(models_dir: Path | None = None, diffusers_dir: Path | None = None) -> list[Path]:
    """Folders searched for the T5 tokenizer, in order."""
    return _dirs(models_dir, diffusers_dir, "t5xxl", "tokenizer_2")


def _dirs(models_dir: Path | None, diffusers_dir: Path | None, name: str, subfolder: str) -> list[Path]:
    out = []
    if diffusers_dir is not None:
        out.append(Path(diffusers_dir) / subfolder)
    if models_dir is not None:
        out.append(Path(models_dir) / "tokenizers" / name)
    if not out:
        raise ValueError("give models_dir and/or diffusers_dir to look for tokenizers in")
    return out


def _first_with(folders: Iterable[Path], choices: Sequence[Sequence[str]]) -> Path | None:
    for folder in folders:
        if any(all((folder / f).is_file() for f in files) for files in choices):
            return folder
    return None


def load_clip_tokenizer(folders: Sequence[Path]) -> CLIPTokenizer:
    """The CLIP BPE tokenizer from the first folder holding vocab.json + merges.txt.

    Raises TokenizerFilesMissing naming the folders and files.
    """
    folder = _first_with(folders, (CLIP_FILES,))
    if folder is None:
        raise TokenizerFilesMissing("CLIP-L", folders, CLIP_FILES)
    log.debug("CLIP tokenizer from %s", folder)
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True, model_max_length=_NO_LIMIT)


def load_t5_tokenizer(folders: Sequence[Path]) -> T5Tokenizer:
    """The T5 SentencePiece tokenizer from the first folder holding tokenizer.json or spiece.model.

    Raises TokenizerFilesMissing naming the folders and files.
    """
    folder = _first_with(folders, T5_FILE_CHOICES)
    if folder is None:
        raise TokenizerFilesMissing("T5-XXL", folders, ("tokenizer.json (or spiece.model)",))
    log.debug("T5 tokenizer from %s", folder)
    return T5Tokenizer.from_pretrained(str(folder), local_files_only=True, model_max_length=_NO_LIMIT)


def load_flux_tokenizers(
    models_dir: Path | None = None, diffusers_dir: Path | None = None
) -> tuple[CLIPTokenizer, T5Tokenizer]:
    """(CLIP, T5) tokenizers, from a diffusers folder first, then `<models_dir>/tokenizers/`."""
    return (
        load_clip_tokenizer(clip_tokenizer_dirs(models_dir, diffusers_dir)),
        load_t5_tokenizer(t5_tokenizer_dirs(models_dir, diffusers_dir)),
    )


def fetch_tokenizers(models_dir: Path) -> list[Path]:
    """Download the public CLIP-L and T5 v1.1 tokenizer files into `<models_dir>/tokenizers/`.

    Returns the written files. Raises TokenizerDownloadError (e.g. offline) naming the repository,
    file and folder.
    """
    import huggingface_hub  # only this command talks to the network

    written = []
    for repo, files, target in ((CLIP_REPO, CLIP_FETCH, "clip_l"), (T5_REPO, T5_FETCH, "t5xxl")):
        folder = Path(models_dir) / "tokenizers" / target
        folder.mkdir(parents=True, exist_ok=True)
        for name in files:
            try:
                path = huggingface_hub.hf_hub_download(repo, name, local_dir=folder)
            except Exception as exc:  # offline, DNS, HTTP and hub errors all mean the same here
                raise TokenizerDownloadError(
                    f"could not download {name} from huggingface.co/{repo} into {folder}: {exc.__class__.__name__}: "
                    f"{exc}. Without internet, copy the files ({', '.join(files)}) there by hand."
                ) from exc
            written.append(Path(path))
            log.info("downloaded %s/%s -> %s", repo, name, path)
    return written
