"""Placeholders for the ComfyUI names Fluxloom does not provide.

Packs import many `comfy.*` names at load time but call few of them. A missing name resolves to a
placeholder class, so the import (and even subclassing) succeeds; calling or instantiating it raises
`MissingComfyFeature` naming the pack and the symbol.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .host import pack_of_caller


class MissingComfyFeature(NotImplementedError):
    """A pack used a ComfyUI function or class Fluxloom does not implement."""

    def __init__(self, pack: str, symbol: str) -> None:
        super().__init__(
            f"pack {pack!r} uses {symbol}, which Fluxloom does not provide "
            "(only the ComfyUI modules listed in custom_nodes/README.md are implemented)"
        )
        self.pack = pack
        self.symbol = symbol


class _MissingMeta(type):
    _comfy_symbol: str
    _comfy_pack: str

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise MissingComfyFeature(cls._comfy_pack, cls._comfy_symbol)

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return missing(f"{cls._comfy_symbol}.{name}", cls._comfy_pack)

    def __repr__(cls) -> str:
        return f"<missing ComfyUI symbol {cls._comfy_symbol}>"


def missing(symbol: str, pack: str | None = None) -> type:
    """A placeholder class for `symbol` (e.g. "comfy.sd.load_checkpoint_guess_config")."""
    name = symbol.rsplit(".", 1)[-1]
    return _MissingMeta(
        name,
        (),
        {
            "_comfy_symbol": symbol,
            "_comfy_pack": pack or pack_of_caller(3),
            "__module__": symbol.rsplit(".", 1)[0],
        },
    )


def module_getattr(module_name: str, *, submodules: bool = False) -> Any:
    """A module `__getattr__` that answers unknown public names with placeholders.

    With `submodules` (the `comfy` package and friends), a lowercase name is imported as the submodule
    `module_name.name` first, as ComfyUI's packages expose submodules other modules imported
    (`import comfy.utils` makes `comfy.model_management` reachable there).
    """

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        public = module_name.replace("nodes.compat.", "", 1)
        if submodules and name.islower():
            import importlib

            return importlib.import_module(f"{public}.{name}")
        return missing(f"{public}.{name}", pack_of_caller(2))

    return __getattr__


class PlaceholderModule(ModuleType):
    """A ComfyUI module we do not have: every attribute is a placeholder; submodules import too."""

    def __init__(self, name: str) -> None:
        super().__init__(name, f"Placeholder for ComfyUI's {name} (not provided by Fluxloom).")
        self.__path__: list[str] = []
        self.__all__: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return missing(f"{self.__name__}.{name}", pack_of_caller(2))
