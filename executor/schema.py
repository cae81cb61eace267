"""The node contract: typed inputs and outputs, flags, the base `Node` and its context.

A built-in node declares a `Schema` and a classmethod `execute`:

    class Invert(Node):
        schema = Schema("ImageInvert", category="image", inputs=(Typed("image", "IMAGE"),), outputs=("IMAGE",))

        @classmethod
        def execute(cls, image): ...

ComfyUI V1 and V3 classes are turned into the same `Schema` by `executor.adapters`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Generic, TypeVar

# Literal-valued ("widget") types; everything else is a socket type carried by links.
INT, FLOAT, STRING, BOOLEAN, COMBO = "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"
WIDGET_TYPES = frozenset({INT, FLOAT, STRING, BOOLEAN, COMBO})
ANY = "*"

HIDDEN_KINDS = frozenset({"PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "DYNPROMPT"})
SEED_MAX = 0xFFFFFFFFFFFFFFFF
MAX_RESOLUTION = 16384  # ComfyUI's bound on image and latent sizes in pixels
S = TypeVar("S")  # the services object a NodeContext carries

# Options of a COMBO may be computed when asked (e.g. files in a model folder). The callable gets the
# app's services object (opaque to the executor) and returns the current choices.
OptionsProvider = Callable[[Any], Sequence[str]]


@dataclass(frozen=True, eq=False)
class Input:
    """One input slot. `type` is a widget type (INT, FLOAT, STRING, BOOLEAN, COMBO) or a socket type."""

    name: str
    type: str
    optional: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    round: float | bool | None = None
    options: tuple[str, ...] | OptionsProvider | None = None
    multiline: bool = False
    dynamic_prompts: bool | None = None
    control_after_generate: bool = False
    force_input: bool = False
    lazy: bool = False
    raw_link: bool = False
    tooltip: str | None = None
    # Spec options passed to the frontend unchanged (image_upload, display, placeholder, ...).
    extra: Mapping[str, Any] = field(default_factory=dict)
    # V1 combos serialise as [[options], {...}]; V3 ones as ["COMBO", {"options": [...]}].
    legacy_combo: bool = True

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.force_input

    @property
    def has_dynamic_options(self) -> bool:
        return callable(self.options)


def Int(
    name: str, default: int = 0, *, min: int = -SEED_MAX, max: int = SEED_MAX, step: int = 1, **kw: Any
) -> Input:
    return Input(name, INT, default=default, min=min, max=max, step=step, **kw)


def Float(
    name: str, default: float = 0.0, *, min: float = -1e18, max: float = 1e18, step: float = 0.1, **kw: Any
) -> Input:
    return Input(name, FLOAT, default=default, min=min, max=max, step=step, **kw)


def String(name: str, default: str = "", *, multiline: bool = False, **kw: Any) -> Input:
    return Input(name, STRING, default=default, multiline=multiline, **kw)


def Boolean(name: str, default: bool = False, **kw: Any) -> Input:
    return Input(name, BOOLEAN, default=default, **kw)


def Combo(
    name: str, options: Sequence[str] | OptionsProvider, default: str | None = None, **kw: Any
) -> Input:
    choices = options if callable(options) else tuple(options)
    return Input(name, COMBO, default=default, options=choices, **kw)


def Typed(name: str, type_: str, **kw: Any) -> Input:
    """A socket-only input (IMAGE, LATENT, MODEL, ...)."""
    return Input(name, type_, **kw)


@dataclass(frozen=True)
class Output:
    type: str
    name: str | None = None
    is_list: bool = False
    tooltip: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.type


@dataclass(frozen=True)
class Hidden:
    """A hidden input filled by the engine. Kinds outside HIDDEN_KINDS (API keys, ...) receive None."""

    name: str
    kind: str


PROMPT_HIDDEN = (Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO"))


@dataclass(frozen=True)
class Schema:
    """Everything the engine and the frontend need to know about a node type."""

    node_id: str
    inputs: tuple[Input, ...] = ()
    outputs: tuple[Output, ...] = ()  # plain type strings are accepted and wrapped
    hidden: tuple[Hidden, ...] = ()
    category: str = "utils"
    display_name: str | None = None
    description: str = ""
    is_output_node: bool = False
    is_input_list: bool = False
    not_idempotent: bool = False
    deprecated: bool = False
    experimental: bool = False
    has_intermediate_output: bool = False
    python_module: str = "nodes"
    search_aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        outs = tuple(o if isinstance(o, Output) else Output(o) for o in self.outputs)
        object.__setattr__(self, "outputs", outs)
        names = [i.name for i in self.inputs] + [h.name for h in self.hidden]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"node {self.node_id!r}: duplicate input names {dupes}")
        if not isinstance(self.node_id, str) or not self.node_id.strip():
            raise ValueError(f"node id must be a non-empty string, got {self.node_id!r}")

    @property
    def title(self) -> str:
        return self.display_name or self.node_id

    def input(self, name: str) -> Input | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    # Cached: schemas never change after construction, and the engine asks for these once per node run.
    @cached_property
    def lazy_inputs(self) -> frozenset[str]:
        return frozenset(i.name for i in self.inputs if i.lazy)

    @cached_property
    def signs_node_id(self) -> bool:
        """Whether the node's cache signature includes its id (a new node id re-runs it)."""
        return self.not_idempotent or any(h.kind == "UNIQUE_ID" for h in self.hidden)

    @cached_property
    def declared_names(self) -> frozenset[str]:
        """Every input and hidden input name."""
        return frozenset(i.name for i in self.inputs) | frozenset(h.name for h in self.hidden)

    @property
    def has_dynamic_options(self) -> bool:
        return any(i.has_dynamic_options for i in self.inputs)


@dataclass(frozen=True)
class NodeOutput:
    """What a node returns: output values, optional UI data, optional graph expansion.

    With `expand`, `values` may hold links `[node_id, index]` into the expansion graph.
    """

    values: tuple[Any, ...] = ()
    ui: Mapping[str, Any] | None = None
    expand: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, *values: Any, ui: Mapping[str, Any] | None = None, expand: Mapping[str, Any] | None = None):
        return cls(tuple(values), ui=ui, expand=expand)


class NodeContext(Generic[S]):
    """The narrow view of the engine a running node gets (first parameter named `ctx`).

    `services` is whatever the composition root handed the executor; node code names its type
    (`NodeContext[NodeServices]`), so memory, settings and model paths are typed attributes.
    """

    __slots__ = ("node_id", "prompt_id", "services", "_progress", "_should_stop")

    def __init__(
        self,
        node_id: str,
        prompt_id: str,
        services: S,
        *,
        progress: Callable[[float, float, bytes | None], None],
        should_stop: Callable[[], bool],
    ) -> None:
        self.node_id = node_id
        self.prompt_id = prompt_id
        self.services = services
        self._progress = progress
        self._should_stop = should_stop

    def report_progress(self, value: float, maximum: float, preview: bytes | None = None) -> None:
        """Report `value` of `maximum` steps done; `preview` is an encoded JPEG/PNG image, if any."""
        self._progress(value, maximum, preview)

    def should_stop(self) -> bool:
        return self._should_stop()

    def check_cancelled(self) -> None:
        from .errors import Interrupted

        if self._should_stop():
            raise Interrupted(f"interrupted in node {self.node_id}")


class Node:
    """Base of built-in nodes: a schema plus classmethods; no instance state."""

    schema: ClassVar[Schema]

    @classmethod
    def execute(cls, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    # Optional hooks. Each receives the literal inputs as keyword arguments (links as None).
    fingerprint: ClassVar[Callable[..., Any] | None] = None
    validate_inputs: ClassVar[Callable[..., Any] | None] = None
    # Receives all available inputs (unevaluated lazy ones as None); returns names still needed.
    check_lazy_status: ClassVar[Callable[..., Sequence[str]] | None] = None
