"""ComfyUI's V3 `io` module: typed inputs and outputs, `Schema`, `ComfyNode`, `NodeOutput`, `Hidden`.

Each type is a class with an `io_type` and nested `Input`/`Output` classes; inputs serialise with
`as_dict()` to ComfyUI's option names, which `executor.adapters` turns into our schema. The node
side (`Schema`, `ComfyNode`, `NodeOutput`, `Hidden`) is in `_io_node` and re-exported here, where
packs look for it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ...missing import module_getattr
from ._io_node import ComfyNode as ComfyNode
from ._io_node import ComfyNodeV3 as ComfyNodeV3
from ._io_node import Hidden as Hidden
from ._io_node import NodeOutput as NodeOutput
from ._io_node import Schema as Schema

__getattr__ = module_getattr(__name__)


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class _IO:
    """Base of every input and output declaration."""

    io_type: ClassVar[str] = "*"

    def get_io_type(self) -> str:
        return self.io_type


class Input(_IO):
    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        extra_dict: dict[str, Any] | None = None,
        raw_link: bool | None = None,
        advanced: bool | None = None,
        **_: Any,
    ) -> None:
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = dict(extra_dict or {})
        self.raw_link = raw_link
        self.advanced = advanced

    def as_dict(self) -> dict[str, Any]:
        return (
            _clean(
                {
                    "display_name": self.display_name,
                    "tooltip": self.tooltip,
                    "lazy": self.lazy,
                    "rawLink": self.raw_link,
                    "advanced": self.advanced,
                }
            )
            | self.extra_dict
        )


class WidgetInput(Input):
    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        default: Any = None,
        socketless: bool | None = None,
        widget_type: str | None = None,
        force_input: bool | None = None,
        extra_dict: dict[str, Any] | None = None,
        raw_link: bool | None = None,
        advanced: bool | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced)
        self.default = default
        self.socketless = socketless
        self.force_input = force_input

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | _clean(
            {"default": self.default, "socketless": self.socketless, "forceInput": self.force_input}
        )


class Output(_IO):
    def __init__(
        self,
        id: str | None = None,
        display_name: str | None = None,
        tooltip: str | None = None,
        is_output_list: bool = False,
        **_: Any,
    ) -> None:
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list


class ComfyType:
    """A V3 type: `io_type` plus `Input`/`Output` classes bound to it."""

    io_type: ClassVar[str] = "*"
    Type: ClassVar[Any] = Any
    Input: ClassVar[type] = Input
    Output: ClassVar[type] = Output


def comfytype(io_type: str) -> Callable[[type], type]:
    """Class decorator: bind `io_type` to the class and to its (possibly inherited) Input/Output."""

    def decorate(cls: type) -> type:
        cls.io_type = io_type  # type: ignore[attr-defined]
        for part in ("Input", "Output"):
            base = getattr(cls, part, None)
            if base is None:
                base = Input if part == "Input" else Output
            setattr(
                cls,
                part,
                type(part, (base,), {"io_type": io_type, "__qualname__": f"{cls.__qualname__}.{part}"}),
            )
        return cls

    return decorate


ComfyTypeIO = ComfyType
ComfyTypeI = ComfyType


def _socket(io_type: str, name: str) -> type:
    """A plain socket type (no widget): a ComfyType subclass named `name` bound to `io_type`."""
    return comfytype(io_type)(type(name, (ComfyType,), {}))


def Custom(io_type: str) -> type:
    """A type of a pack's own (`io.Custom("MY_TYPE")`)."""
    return _socket(io_type, io_type)


class _Number(WidgetInput):
    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        default: Any = None,
        min: Any = None,
        max: Any = None,
        step: Any = None,
        round: Any = None,
        display_mode: Any = None,
        control_after_generate: bool | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, default, **kw)
        self.min, self.max, self.step, self.round = min, max, step, round
        self.display_mode = display_mode
        self.control_after_generate = control_after_generate

    def as_dict(self) -> dict[str, Any]:
        display = getattr(self.display_mode, "value", self.display_mode)
        return super().as_dict() | _clean(
            {
                "min": self.min,
                "max": self.max,
                "step": self.step,
                "round": self.round,
                "display": display,
                "control_after_generate": self.control_after_generate,
            }
        )


class NumberDisplay(str, enum.Enum):
    number = "number"
    slider = "slider"


@comfytype("INT")
class Int(ComfyType):
    Type = int

    class Input(_Number):
        pass


@comfytype("FLOAT")
class Float(ComfyType):
    Type = float

    class Input(_Number):
        pass


@comfytype("STRING")
class String(ComfyType):
    Type = str

    class Input(WidgetInput):
        def __init__(
            self,
            id: str,
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            multiline: bool = False,
            placeholder: str | None = None,
            default: str | None = None,
            dynamic_prompts: bool | None = None,
            **kw: Any,
        ) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, **kw)
            self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | _clean(
                {
                    "multiline": self.multiline or None,
                    "placeholder": self.placeholder,
                    "dynamicPrompts": self.dynamic_prompts,
                }
            )


@comfytype("BOOLEAN")
class Boolean(ComfyType):
    Type = bool

    class Input(WidgetInput):
        def __init__(
            self,
            id: str,
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            default: bool | None = None,
            label_on: str | None = None,
            label_off: str | None = None,
            **kw: Any,
        ) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, **kw)
            self.label_on, self.label_off = label_on, label_off

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | _clean({"label_on": self.label_on, "label_off": self.label_off})


@comfytype("COMBO")
class Combo(ComfyType):
    Type = str

    class Input(WidgetInput):
        def __init__(
            self,
            id: str,
            options: Sequence[Any] | type[enum.Enum] | None = None,
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            default: Any = None,
            control_after_generate: bool | None = None,
            upload: Any = None,
            image_folder: Any = None,
            remote: Any = None,
            **kw: Any,
        ) -> None:
            if isinstance(options, type) and issubclass(options, enum.Enum):
                options = [m.value for m in options]
            if isinstance(default, enum.Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default, **kw)
            self.options = list(options or [])
            self.control_after_generate = control_after_generate
            self.upload = upload

        def as_dict(self) -> dict[str, Any]:
            data = super().as_dict() | _clean(
                {"options": self.options, "control_after_generate": self.control_after_generate}
            )
            upload = getattr(self.upload, "value", self.upload)
            if upload:
                data[str(upload)] = True
            return data


class UploadType(str, enum.Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


@comfytype("COMBO")
class MultiCombo(ComfyType):
    Type = list

    class Input(Combo.Input):
        def __init__(self, id: str, options: Sequence[str], **kw: Any) -> None:
            super().__init__(id, options, **kw)

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {"multi_select": True}


Image = _socket("IMAGE", "Image")
Mask = _socket("MASK", "Mask")
Latent = _socket("LATENT", "Latent")
Conditioning = _socket("CONDITIONING", "Conditioning")
Model = _socket("MODEL", "Model")
Clip = _socket("CLIP", "Clip")
Vae = _socket("VAE", "Vae")
ClipVision = _socket("CLIP_VISION", "ClipVision")
ClipVisionOutput = _socket("CLIP_VISION_OUTPUT", "ClipVisionOutput")
StyleModel = _socket("STYLE_MODEL", "StyleModel")
ControlNet = _socket("CONTROL_NET", "ControlNet")
UpscaleModel = _socket("UPSCALE_MODEL", "UpscaleModel")
Sampler = _socket("SAMPLER", "Sampler")
Sigmas = _socket("SIGMAS", "Sigmas")
Noise = _socket("NOISE", "Noise")
Guider = _socket("GUIDER", "Guider")
LoraModel = _socket("LORA_MODEL", "LoraModel")
Audio = _socket("AUDIO", "Audio")
Video = _socket("VIDEO", "Video")
Webcam = _socket("WEBCAM", "Webcam")
AnyType = _socket("*", "AnyType")
