"""Model folders: ComfyUI's subfolder names under a models root, plus `extra_model_paths.yaml`.

`ModelPaths` is built once in main.py and reaches nodes through the services object. It lists the
files of a kind (for COMBO widgets) and resolves a chosen name back to a path. A name is always
relative to one of the kind's folders: `..`, absolute paths and NUL bytes are rejected. Symlinks
inside a model folder may point anywhere (models are only read, never written, and many users keep
their models on another disk and link them in); listing follows them once, never around a loop,
and stops after `MAX_LISTED_ENTRIES` entries. Error texts name folders by their own name, not by
their absolute path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType

import yaml

log = logging.getLogger(__name__)

MAX_LISTED_ENTRIES = 200_000  # a symlink to a huge tree (even "/") cannot stall a listing forever

# kind -> subfolders of the models root searched for it, in order (ComfyUI's names and legacy names)
DEFAULT_FOLDERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "checkpoints": ("checkpoints",),
        "diffusion_models": ("diffusion_models", "unet"),
        "text_encoders": ("text_encoders", "clip"),
        "vae": ("vae",),
        "loras": ("loras",),
        "controlnet": ("controlnet", "t2i_adapter"),
        "clip_vision": ("clip_vision",),
        "style_models": ("style_models",),
        "ipadapter": ("ipadapter",),
        "xlabs_ipadapters": ("xlabs/ipadapters",),  # where XLabs' pack looks for flux-ip-adapter files
        "upscale_models": ("upscale_models",),
        "embeddings": ("embeddings",),
        "diffusers": ("diffusers",),
        "tokenizers": ("tokenizers",),
    }
)
ALIASES: Mapping[str, str] = MappingProxyType({"unet": "diffusion_models", "clip": "text_encoders"})
MODEL_EXTENSIONS = frozenset({".safetensors", ".sft", ".ckpt", ".pt", ".bin", ".pth"})
# Kinds whose entries may be diffusers-style folders (listed as one name, not descended into).
FOLDER_KINDS = frozenset({"checkpoints", "diffusion_models", "text_encoders", "vae", "diffusers"})
# Checkpoint pickers also offer the pipelines found in the diffusers folder.
EXTRA_ROOT_KINDS: Mapping[str, tuple[str, ...]] = MappingProxyType({"checkpoints": ("diffusers",)})


class ModelPathError(ValueError):
    """A model name that is unsafe or names no file."""


class UnsafeModelPath(ModelPathError):
    """The name tries to leave its model folder."""


class ModelNotFound(ModelPathError, LookupError):
    """No folder of the kind holds the name."""


class ExtraPathsConfigError(ValueError):
    """extra_model_paths.yaml is unreadable or malformed."""


def canonical_kind(kind: str) -> str:
    return ALIASES.get(kind, kind)


def is_diffusers_folder(path: Path) -> bool:
    """A pipeline (model_index.json) or one component (config.json + weights) in diffusers' layout."""
    if (path / "model_index.json").is_file():
        return True
    if not (path / "config.json").is_file():
        return False
    return any(path.glob("*.safetensors")) or any(path.glob("*.safetensors.index.json"))


@dataclass(frozen=True)
class ModelPaths:
    """Ordered folders per kind. Immutable: `with_folder` returns a new object."""

    folders: Mapping[str, tuple[Path, ...]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "folders", MappingProxyType(dict(self.folders)))

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_models_dir(cls, models_dir: str | Path, extra_configs: Iterable[str | Path] = ()) -> ModelPaths:
        root = Path(models_dir)
        paths = cls({kind: tuple(root / sub for sub in subs) for kind, subs in DEFAULT_FOLDERS.items()})
        for config in extra_configs:
            paths = paths.with_extra_config(config)
        return paths

    def with_folder(self, kind: str, folder: str | Path, *, is_default: bool = False) -> ModelPaths:
        """A copy with `folder` searched for `kind` (first when is_default, else last)."""
        kind = canonical_kind(kind)
        folder = Path(folder)
        current = tuple(f for f in self.folders.get(kind, ()) if f != folder)
        new = (folder, *current) if is_default else (*current, folder)
        return ModelPaths({**self.folders, kind: new})

    def with_extra_config(self, config: str | Path) -> ModelPaths:
        """Add the folders of a ComfyUI `extra_model_paths.yaml`.

        Each top-level section may give `base_path` (relative to the yaml's folder; `~` and
        environment variables expanded) and `is_default`; every other key is a kind whose value
        holds one path per line, relative to base_path (or to the yaml's folder).
        """
        config = Path(config)
        try:
            data = yaml.safe_load(config.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ExtraPathsConfigError(f"{config}: extra model paths file not found") from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ExtraPathsConfigError(f"{config}: not valid YAML ({exc})") from None
        if data is None:
            return self
        if not isinstance(data, dict):
            raise ExtraPathsConfigError(
                f"{config}: expected sections of folder settings, got {type(data).__name__}"
            )
        paths = self
        for section, conf in data.items():
            if conf is None:
                continue
            if not isinstance(conf, dict):
                raise ExtraPathsConfigError(f"{config}: section {section!r} must map kinds to paths")
            conf = dict(conf)
            base = conf.pop("base_path", None)
            is_default = bool(conf.pop("is_default", False))
            base_dir = _expand(str(base), config.parent) if base else None
            for kind, value in conf.items():
                if not isinstance(value, str):
                    raise ExtraPathsConfigError(
                        f"{config}: {section}.{kind} must be a path or lines of paths, got {value!r}"
                    )
                for line in value.splitlines():
                    line = line.strip()
                    if line:
                        folder = _expand(line, base_dir if base_dir is not None else config.parent)
                        log.debug("extra model folder %s: %s", kind, folder)
                        paths = paths.with_folder(str(kind), folder, is_default=is_default)
        return paths

    # --- queries ------------------------------------------------------------------------------
    def folders_for(self, kind: str) -> tuple[Path, ...]:
        """Every folder searched for `kind` (existing or not), in order."""
        kind = canonical_kind(kind)
        extra = tuple(f for k in EXTRA_ROOT_KINDS.get(kind, ()) for f in self.folders.get(k, ()))
        return self.folders.get(kind, ()) + extra

    def list_models(self, kind: str) -> list[str]:
        """Sorted forward-slash names of the model files (and diffusers folders) of `kind`."""
        kind = canonical_kind(kind)
        names: set[str] = set()
        for folder in self.folders_for(kind):
            names.update(_walk(folder, allow_folders=kind in FOLDER_KINDS))
        return sorted(names)

    def resolve(self, kind: str, name: str) -> Path:
        """The path of `name` in the first folder of `kind` that holds it.

        Raises UnsafeModelPath for names that leave the folder and ModelNotFound otherwise. A name
        may be a symlink to a file anywhere.
        """
        kind = canonical_kind(kind)
        rel = _safe_relative(name)
        for folder in self.folders_for(kind):
            candidate = folder / rel
            try:
                found = candidate.is_file() or (candidate.is_dir() and is_diffusers_folder(candidate))
            except OSError:  # a name too long for the file system, a symlink loop
                found = False
            if found:
                return candidate
        searched = ", ".join(f.name for f in self.folders_for(kind)) or "no folders"
        raise ModelNotFound(f"{kind} {name!r} not found (searched the model folders {searched})")


def _expand(text: str, relative_to: Path) -> Path:
    path = Path(os.path.expandvars(os.path.expanduser(text)))
    return path if path.is_absolute() else relative_to / path


def _safe_relative(name: str) -> PurePosixPath:
    if not isinstance(name, str) or not name.strip():
        raise UnsafeModelPath(f"model name must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise UnsafeModelPath(f"model name {name!r} contains a NUL byte")
    text = name.replace("\\", "/")  # names from Windows workflows use backslashes
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise UnsafeModelPath(f"model name {name!r} is absolute; names are relative to a model folder")
    parts = text.split("/")
    if any(part in ("..", ".", "") for part in parts):
        raise UnsafeModelPath(f"model name {name!r} may not contain '..', '.' or empty parts")
    return PurePosixPath(*parts)


def _walk(folder: Path, *, allow_folders: bool) -> Iterator[str]:
    """Relative names under `folder`; symlinked folders are followed wherever they point, once each."""
    if not folder.is_dir():
        return
    stack = [folder]
    seen: set[Path] = set()
    listed = 0
    while stack:
        current = stack.pop()
        try:
            real = current.resolve()
        except (OSError, RuntimeError):
            continue
        if real in seen:  # a symlink loop, or two links to one folder
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(current))
        except OSError as exc:
            log.warning("cannot list model folder %s: %s", current, exc)
            continue
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith("."):
                continue
            listed += 1
            if listed > MAX_LISTED_ENTRIES:
                log.warning("model folder %s: stopped listing after %d entries", folder, MAX_LISTED_ENTRIES)
                return
            if entry.is_dir():
                if allow_folders and is_diffusers_folder(path):
                    yield path.relative_to(folder).as_posix()
                else:
                    stack.append(path)
            elif entry.is_file() and path.suffix.lower() in MODEL_EXTENSIONS:
                yield path.relative_to(folder).as_posix()
