"""Primitive value nodes and small string utilities (ComfyUI's nodes_primitive / nodes_string)."""

from __future__ import annotations

import json
from typing import Any

from executor.schema import ANY, Boolean, Float, Int, Node, NodeOutput, Schema, String, Typed
from nodes.runtime.types import BOOLEAN, FLOAT, INT, STRING

_INT_LIMIT = 0x7FFFFFFFFFFFFFFF


class PrimitiveInt(Node):
    schema = Schema(
        "PrimitiveInt",
        display_name="Int",
        category="utils/primitive",
        outputs=(INT,),
        inputs=(Int("value", 0, min=-_INT_LIMIT, max=_INT_LIMIT, control_after_generate=True),),
    )

    @classmethod
    def execute(cls, value: int) -> tuple[int]:
        return (value,)


class PrimitiveFloat(Node):
    schema = Schema(
        "PrimitiveFloat",
        display_name="Float",
        category="utils/primitive",
        outputs=(FLOAT,),
        inputs=(Float("value", 0.0, min=-_INT_LIMIT, max=_INT_LIMIT, step=0.1),),
    )

    @classmethod
    def execute(cls, value: float) -> tuple[float]:
        return (value,)


class PrimitiveString(Node):
    schema = Schema(
        "PrimitiveString",
        display_name="String",
        category="utils/primitive",
        outputs=(STRING,),
        inputs=(String("value"),),
    )

    @classmethod
    def execute(cls, value: str) -> tuple[str]:
        return (value,)


class PrimitiveStringMultiline(Node):
    schema = Schema(
        "PrimitiveStringMultiline",
        display_name="String (Multiline)",
        category="utils/primitive",
        outputs=(STRING,),
        inputs=(String("value", multiline=True),),
    )

    @classmethod
    def execute(cls, value: str) -> tuple[str]:
        return (value,)


class PrimitiveBoolean(Node):
    schema = Schema(
        "PrimitiveBoolean",
        display_name="Boolean",
        category="utils/primitive",
        outputs=(BOOLEAN,),
        inputs=(Boolean("value"),),
    )

    @classmethod
    def execute(cls, value: bool) -> tuple[bool]:
        return (value,)


class StringConcatenate(Node):
    schema = Schema(
        "StringConcatenate",
        display_name="Concatenate",
        category="utils/string",
        outputs=(STRING,),
        inputs=(String("string_a", multiline=True), String("string_b", multiline=True), String("delimiter")),
    )

    @classmethod
    def execute(cls, string_a: str, string_b: str, delimiter: str) -> tuple[str]:
        return (delimiter.join((string_a, string_b)),)


def preview_text(value: Any) -> str:
    """How PreviewAny shows a value: strings as-is, JSON-able values as JSON, else str()."""
    if isinstance(value, str):
        return value
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{type(value).__name__} shape={tuple(value.shape)} dtype={value.dtype}"
    try:
        return json.dumps(value, indent=4)
    except (TypeError, ValueError):
        return str(value)


class PreviewAny(Node):
    schema = Schema(
        "PreviewAny",
        display_name="Preview Any",
        category="utils",
        outputs=(),
        is_output_node=True,
        inputs=(Typed("source", ANY),),
    )

    @classmethod
    def execute(cls, source: Any) -> NodeOutput:
        return NodeOutput.of(ui={"text": [preview_text(source)]})


NODES = (
    PrimitiveInt,
    PrimitiveFloat,
    PrimitiveString,
    PrimitiveStringMultiline,
    PrimitiveBoolean,
    StringConcatenate,
    PreviewAny,
)
