"""A small pack of fake nodes that drive the engine without any model."""

from __future__ import annotations

import threading
from typing import Any

from executor.registry import NodeRegistry
from executor.schema import (
    ANY,
    Boolean,
    Combo,
    Float,
    Hidden,
    Int,
    Node,
    NodeContext,
    NodeOutput,
    Output,
    Schema,
    String,
    Typed,
)


class Number(Node):
    schema = Schema("Number", inputs=(Int("value", 1, min=0, max=100),), outputs=("INT",))

    @classmethod
    def execute(cls, value: int) -> tuple[int]:
        return (value,)


class Add(Node):
    schema = Schema("Add", inputs=(Typed("a", "INT"), Typed("b", "INT")), outputs=("INT",))

    @classmethod
    def execute(cls, a: int, b: int) -> tuple[int]:
        return (a + b,)


class Scale(Node):
    schema = Schema(
        "Scale", inputs=(Typed("x", "INT"), Float("factor", 1.0, min=0.0, max=10.0)), outputs=("FLOAT",)
    )

    @classmethod
    def execute(cls, x: int, factor: float) -> tuple[float]:
        return (x * factor,)


class Pick(Node):
    schema = Schema("Pick", inputs=(Typed("x", "INT"), Combo("mode", ("same", "double"))), outputs=("INT",))

    @classmethod
    def execute(cls, x: int, mode: str) -> tuple[int]:
        return (x if mode == "same" else 2 * x,)


class Show(Node):
    schema = Schema("Show", inputs=(Typed("value", ANY),), outputs=(), is_output_node=True)

    @classmethod
    def execute(cls, value: Any) -> NodeOutput:
        return NodeOutput.of(ui={"text": [repr(value)]})


class Text(Node):
    schema = Schema(
        "Text", inputs=(String("text", "hi"), Typed("suffix", "STRING", optional=True)), outputs=("STRING",)
    )

    @classmethod
    def execute(cls, text: str, suffix: str = "") -> tuple[str]:
        return (text + suffix,)


class Fail(Node):
    schema = Schema("Fail", inputs=(Typed("x", "INT"),), outputs=("INT",))

    @classmethod
    def execute(cls, x: int) -> tuple[int]:
        raise ValueError(f"cannot use {x}")


class Switch(Node):
    """Lazy: only the chosen branch is evaluated."""

    schema = Schema(
        "Switch",
        outputs=("INT",),
        inputs=(Boolean("use_a", True), Typed("a", "INT", lazy=True), Typed("b", "INT", lazy=True)),
    )

    @classmethod
    def check_lazy_status(cls, use_a: bool, a: Any = None, b: Any = None) -> list[str]:
        return ["a"] if use_a else ["b"]

    @classmethod
    def execute(cls, use_a: bool, a: Any = None, b: Any = None) -> tuple[int]:
        return (a if use_a else b,)


class Range(Node):
    schema = Schema(
        "Range", inputs=(Int("count", 3, min=0, max=100),), outputs=(Output("INT", is_list=True),)
    )

    @classmethod
    def execute(cls, count: int) -> tuple[list[int]]:
        return (list(range(count)),)


class Sum(Node):
    schema = Schema("Sum", inputs=(Typed("values", "INT"),), outputs=("INT",), is_input_list=True)

    @classmethod
    def execute(cls, values: list[int]) -> tuple[int]:
        return (sum(values),)


class Double(Node):
    """Expands into an Add of its input with itself."""

    schema = Schema("Double", inputs=(Typed("x", "INT"),), outputs=("INT",))

    @classmethod
    def execute(cls, x: int) -> NodeOutput:
        graph = {
            "n": {"class_type": "Number", "inputs": {"value": x}},
            "sum": {"class_type": "Add", "inputs": {"a": ["n", 0], "b": ["n", 0]}},
        }
        return NodeOutput((["sum", 0],), expand=graph)


class Always(Node):
    """Re-runs on every prompt (fingerprint NaN, like IS_CHANGED returning NaN)."""

    schema = Schema("Always", inputs=(Int("value", 0),), outputs=("INT",))

    @classmethod
    def fingerprint(cls, value: int) -> float:
        return float("nan")

    @classmethod
    def execute(cls, value: int) -> tuple[int]:
        return (value,)


class Unique(Node):
    schema = Schema("Unique", inputs=(Int("value", 0),), outputs=("INT",), not_idempotent=True)

    @classmethod
    def execute(cls, value: int) -> tuple[int]:
        return (value,)


class WhoAmI(Node):
    schema = Schema("WhoAmI", inputs=(), outputs=("STRING",), hidden=(Hidden("unique_id", "UNIQUE_ID"),))

    @classmethod
    def execute(cls, unique_id: str) -> tuple[str]:
        return (unique_id,)


class Even(Node):
    schema = Schema("Even", inputs=(Int("value", 0),), outputs=("INT",))

    @classmethod
    def validate_inputs(cls, value: int) -> bool | str:
        return True if value % 2 == 0 else f"value must be even, got {value}"

    @classmethod
    def execute(cls, value: int) -> tuple[int]:
        return (value,)


class Slow(Node):
    """Reports progress and waits on an event, so tests can interrupt it mid-prompt."""

    schema = Schema("Slow", inputs=(Typed("x", "INT"), Int("steps", 3, min=1, max=100)), outputs=("INT",))
    started = threading.Event()
    release = threading.Event()

    @classmethod
    def execute(cls, ctx: NodeContext, x: int, steps: int) -> tuple[int]:
        for step in range(steps):
            ctx.report_progress(step + 1, steps)
            cls.started.set()
            cls.release.wait(timeout=5)
            ctx.check_cancelled()
        return (x,)


FAKE_NODES = (
    Number,
    Add,
    Scale,
    Pick,
    Show,
    Text,
    Fail,
    Switch,
    Range,
    Sum,
    Double,
    Always,
    Unique,
    WhoAmI,
    Even,
    Slow,
)


def fake_registry() -> NodeRegistry:
    registry = NodeRegistry()
    for node in FAKE_NODES:
        registry.register(node, source="tests")
    return registry
