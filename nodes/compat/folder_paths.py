"""ComfyUI's `folder_paths` over Fluxloom's folders (ModelPaths and Settings).

`folder_names_and_paths` maps a folder name to `([paths], {extensions})` as in ComfyUI and packs may
change it (`add_model_folder_path`); it is rebuilt from the app's ModelPaths when the app configures
the compat layer. Legacy names (`unet`, `clip`) map to `diffusion_models` and `text_encoders`.
Every lookup of a user-given name stays inside its folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nodes.runtime.file_paths import UnsafePathError, safe_resolve, save_folder, save_target, split_annotation

from .missing import module_getattr

log = logging.getLogger(__name__)

supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
LEGACY_NAMES = {"unet": "diffusion_models", "clip": "text_encoders"}
# Folders ComfyUI knows besides the model kinds of ModelPaths (name -> extensions; empty = any file).
_EXTRA_FOLDERS: dict[str, set[str]] = {
    "configs": {".yaml"},
    "hypernetworks": supported_pt_extensions,
    "photomaker": supported_pt_extensions,
    "classifiers": {""},
    "gligen": supported_pt_extensions,
    "vae_approx": supported_pt_extensions,
    "model_patches": supported_pt_extensions,
    "audio_encoders": supported_pt_extensions,
    "latent_upscale_models": supported_pt_extensions,
}

base_path = str(Path.cwd())
models_dir = os.path.join(base_path, "models")
output_directory = os.path.join(base_path, "output")
temp_directory = os.path.join(base_path, "temp")
input_directory = os.path.join(base_path, "input")
user_directory = os.path.join(base_path, "user")
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
filename_list_cache: dict[str, Any] = {}

__getattr__ = module_getattr(__name__)


def reset_from_services(services: Any) -> None:
    """Rebuild every folder from the app's Settings and ModelPaths (called by `host.configure`)."""
    global models_dir, output_directory, temp_directory, input_directory, user_directory, base_path
    settings = getattr(services, "settings", None)
    if settings is None:
        from settings import Settings

        settings = Settings()
    models_dir = str(Path(settings.models_dir).resolve())
    base_path = str(Path(models_dir).parent)
    output_directory = str(save_folder(settings, "output").resolve())  # a scratch folder on ranks > 0
    temp_directory = str(save_folder(settings, "temp").resolve())
    input_directory = str(Path(settings.input_dir).resolve())
    user_directory = str(Path(settings.user_dir).resolve())
    folder_names_and_paths.clear()
    model_paths = getattr(services, "model_paths", None)
    if model_paths is None:
        from nodes.runtime.model_paths import ModelPaths

        model_paths = ModelPaths.from_models_dir(settings.models_dir)
    for kind, folders in model_paths.folders.items():
        extensions = {"folder"} if kind == "diffusers" else set(supported_pt_extensions)
        folder_names_and_paths[kind] = ([str(Path(f).resolve()) for f in folders], extensions)
    for kind, extensions in _EXTRA_FOLDERS.items():
        folder_names_and_paths.setdefault(kind, ([os.path.join(models_dir, kind)], set(extensions)))
    custom = [str(Path(settings.custom_nodes_dir).resolve())]
    custom += [str(Path(p).resolve()) for p in getattr(settings, "extra_custom_nodes_dirs", ()) or ()]
    folder_names_and_paths["custom_nodes"] = (custom, set())
    filename_list_cache.clear()


def map_legacy(folder_name: str) -> str:
    return LEGACY_NAMES.get(folder_name, folder_name)


def get_folder_paths(folder_name: str) -> list[str]:
    return list(folder_names_and_paths[map_legacy(folder_name)][0])


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    """Search `full_folder_path` for `folder_name` too (first when is_default); creates the name if new."""
    folder_name = map_legacy(folder_name)
    path = str(full_folder_path)
    if folder_name not in folder_names_and_paths:
        folder_names_and_paths[folder_name] = ([path], set())
        return
    paths = folder_names_and_paths[folder_name][0]
    if path in paths:
        if is_default:
            paths.remove(path)
            paths.insert(0, path)
        return
    if is_default:
        paths.insert(0, path)
    else:
        paths.append(path)
    filename_list_cache.pop(folder_name, None)


def filter_files_extensions(files: Iterable[str], extensions: Iterable[str]) -> list[str]:
    exts = {e.lower() for e in extensions}
    return sorted(f for f in files if not exts or "" in exts or os.path.splitext(f)[1].lower() in exts)


def recursive_search(
    directory: str, excluded_dir_names: list[str] | None = None
) -> tuple[list[str], dict[str, float]]:
    """Files under `directory` as forward-slash relative names, and folder mtimes (ComfyUI's shape)."""
    if not os.path.isdir(directory):
        return [], {}
    excluded = set(excluded_dir_names or []) | {".git"}
    result: list[str] = []
    dirs = {directory: os.path.getmtime(directory)}
    for dirpath, subdirs, filenames in os.walk(directory, followlinks=True, topdown=True):
        subdirs[:] = [d for d in subdirs if d not in excluded and not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            result.append(os.path.relpath(os.path.join(dirpath, name), directory).replace(os.sep, "/"))
        for d in subdirs:
            path = os.path.join(dirpath, d)
            try:
                dirs[path] = os.path.getmtime(path)
            except OSError:
                continue
    return result, dirs


def get_filename_list(folder_name: str) -> list[str]:
    """Sorted relative names of the files of `folder_name` with its extensions, from every folder."""
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        return []
    folders, extensions = folder_names_and_paths[folder_name]
    names: set[str] = set()
    for folder in folders:
        if "folder" in extensions:
            if os.path.isdir(folder):
                names.update(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
            continue
        files, _ = recursive_search(folder)
        names.update(filter_files_extensions(files, extensions))
    return sorted(names)


def get_full_path(folder_name: str, filename: str) -> str | None:
    """The path of `filename` in the first folder of `folder_name` holding it; None if none does."""
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths or not isinstance(filename, str):
        return None
    for folder in folder_names_and_paths[folder_name][0]:
        try:
            path = safe_resolve(folder, filename, what=f"{folder_name} name")
        except UnsafePathError:
            return None
        if path.is_file() or path.is_dir():
            return str(path)
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    path = get_full_path(folder_name, filename)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return path


def get_output_directory() -> str:
    return output_directory


def get_temp_directory() -> str:
    return temp_directory


def get_input_directory() -> str:
    return input_directory


def get_user_directory() -> str:
    return user_directory


def set_output_directory(path: str) -> None:
    global output_directory
    output_directory = str(path)


def set_temp_directory(path: str) -> None:
    global temp_directory
    temp_directory = str(path)


def set_input_directory(path: str) -> None:
    global input_directory
    input_directory = str(path)


def set_user_directory(path: str) -> None:
    global user_directory
    user_directory = str(path)


def get_directory_by_type(type_name: str) -> str | None:
    return {"output": output_directory, "temp": temp_directory, "input": input_directory}.get(type_name)


def annotated_filepath(name: str) -> tuple[str, str | None]:
    """`"x.png [output]"` -> ("x.png", output folder); an unannotated name -> (name, None)."""
    relative, kind = split_annotation(name, default_kind="")
    return relative, (get_directory_by_type(kind) if kind else None)


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    """The path an annotated name refers to (input folder unless annotated or `default_dir` given).

    Raises ValueError when the name would leave its folder.
    """
    relative, base = annotated_filepath(name)
    if base is None:
        base = default_dir if default_dir is not None else get_input_directory()
    return str(safe_resolve(base, relative, what=f"file name {name!r}"))


def exists_annotated_filepath(name: str) -> bool:
    try:
        return os.path.exists(get_annotated_filepath(name))
    except ValueError:
        return False


def get_save_image_path(
    filename_prefix: str, output_dir: str, image_width: int = 0, image_height: int = 0
) -> tuple[str, str, int, str, str]:
    """(folder, file name, next counter, subfolder, prefix) for saving `{name}_{counter:05}_.png` files."""
    target = save_target(output_dir, filename_prefix, width=image_width, height=image_height)
    return str(target.folder), target.name, target.counter, target.subfolder, filename_prefix


def get_filename_list_(folder_name: str) -> tuple[list[str], dict[str, float], float]:
    return get_filename_list(folder_name), {}, 0.0


def cache_helper(*_args: Any, **_kwargs: Any) -> None:
    """ComfyUI's list cache is not used here: lists are read from disk on each call."""
    return None


def merged_into(model_paths: Any) -> Any:
    """`model_paths` (a ModelPaths) plus every folder packs added here, so our own nodes see them too."""
    for kind, (paths, _extensions) in folder_names_and_paths.items():
        if kind == "custom_nodes":
            continue
        known = {str(Path(p).resolve()) for p in model_paths.folders.get(kind, ())}
        for index, path in enumerate(paths):
            if str(Path(path).resolve()) not in known:
                model_paths = model_paths.with_folder(kind, Path(path), is_default=index == 0)
    return model_paths


def get_input_subfolders() -> list[str]:
    root = get_input_directory()
    if not os.path.isdir(root):
        return []
    return sorted(os.path.relpath(d, root).replace(os.sep, "/") for d, _s, _f in os.walk(root) if d != root)
