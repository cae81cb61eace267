"""ComfyUI's V3 `ui` module: UI payloads a node returns (`io.NodeOutput(..., ui=ui.PreviewImage(img))`)."""

from __future__ import annotations

import secrets
import string
from typing import Any

from ...missing import module_getattr

__getattr__ = module_getattr(__name__)


class _UIOutput:
    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


class SavedResult(dict):
    def __init__(self, filename: str, subfolder: str, type: Any) -> None:
        super().__init__(filename=filename, subfolder=subfolder, type=getattr(type, "value", type))


class SavedImages(_UIOutput):
    def __init__(self, results: list[Any], is_animated: bool = False) -> None:
        self.results = results
        self.is_animated = is_animated

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"images": list(self.results)}
        if self.is_animated:
            data["animated"] = (True,)
        return data


def _save_temp(images: Any) -> list[dict[str, str]]:
    from nodes.compat.host import settings
    from nodes.image.files import save_images

    prefix = "ComfyUI_temp_" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))
    return save_images(images, settings().temp_dir, prefix, folder_type="temp", compress_level=1)


class PreviewImage(_UIOutput):
    """Saves the IMAGE batch to the temp folder; the client shows it on the node."""

    def __init__(self, image: Any, animated: bool = False, cls: Any = None, **_: Any) -> None:
        self.values = _save_temp(image)
        self.animated = animated

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.values, "animated": (self.animated,)}


class PreviewMask(PreviewImage):
    def __init__(self, mask: Any, animated: bool = False, cls: Any = None, **kw: Any) -> None:
        image = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3)
        super().__init__(image, animated, cls, **kw)


class PreviewText(_UIOutput):
    def __init__(self, value: str, **_: Any) -> None:
        self.value = value

    def as_dict(self) -> dict[str, Any]:
        return {"text": (self.value,)}
