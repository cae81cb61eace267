"""Registered node types: one uniform shape for native, V1 and V3 nodes, checked at registration."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import NodeDefinitionError
from .schema import Node, NodeContext, NodeOutput, Schema

log = logging.getLogger(__name__)

Invoke = Callable[[NodeContext, dict[str, Any]], NodeOutput]


@dataclass(frozen=True, eq=False)
class NodeType:
    """A node type as the engine sees it, whatever form it was written in.

    `invoke(ctx, inputs)` runs the node once on one set of inputs and returns a `NodeOutput`.
    The optional hooks take the inputs as one dict (fingerprint and validate_inputs also the app
    services, for hooks that declare a `services` parameter). `validate_names` lists the inputs the node
    validates itself (the engine then skips its own range/combo checks for them); None means all.
    """

    schema: Schema
    invoke: Invoke
    source: str = "nodes"
    describe_fn: Callable[[Any], Schema] | None = None
    fingerprint: Callable[[dict[str, Any], Any], Any] | None = None
    validate_inputs: Callable[[dict[str, Any], Any], Any] | None = None
    validate_names: frozenset[str] | None = frozenset()
    check_lazy_status: Callable[[dict[str, Any]], Sequence[str]] | None = None
    origin: type | None = None

    @property
    def node_id(self) -> str:
        return self.schema.node_id

    def describe(self, services: Any = None) -> Schema:
        """The schema with dynamic parts (file lists, V1 INPUT_TYPES) evaluated now."""
        return self.describe_fn(services) if self.describe_fn is not None else self.schema


def normalize_result(raw: Any, schema: Schema) -> NodeOutput:
    """Turn any supported return form into a NodeOutput and check its arity."""
    if isinstance(raw, NodeOutput):
        out = raw
    elif raw is None:
        out = NodeOutput()
    elif isinstance(raw, dict) and ({"result", "ui", "expand"} & raw.keys()):
        out = NodeOutput(tuple(raw.get("result") or ()), ui=raw.get("ui"), expand=raw.get("expand"))
    elif isinstance(raw, (tuple, list)):
        out = NodeOutput(tuple(raw))
    elif hasattr(raw, "args") and hasattr(raw, "ui"):  # ComfyUI V3 io.NodeOutput
        ui = raw.ui.as_dict() if hasattr(raw.ui, "as_dict") else raw.ui
        out = NodeOutput(tuple(raw.args or ()), ui=ui, expand=getattr(raw, "expand", None))
    else:
        raise TypeError(f"returned {type(raw).__name__}; expected a tuple of outputs or a NodeOutput")
    if out.values and len(out.values) != len(schema.outputs):
        raise TypeError(f"returned {len(out.values)} values but declares {len(schema.outputs)} outputs")
    if not out.values and schema.outputs and out.expand is None:
        raise TypeError(f"returned no values but declares {len(schema.outputs)} outputs")
    return out


def find_blocker(inputs: Mapping[str, Any]) -> Any:
    """The first ComfyUI `ExecutionBlocker` among the inputs (duck-typed: packs make them)."""
    for value in inputs.values():
        if type(value).__name__ == "ExecutionBlocker" and hasattr(value, "message"):
            return value
    return None


def blocked_output(blocker: Any, schema: Schema) -> NodeOutput:
    """A node fed an ExecutionBlocker does not run: its outputs are the blocker (a message fails the prompt)."""
    if blocker.message is not None:
        raise RuntimeError(f"Execution Blocked: {blocker.message}")
    return NodeOutput(tuple(blocker for _ in schema.outputs))


def _call_with_known(fn: Callable[..., Any], inputs: Mapping[str, Any], names: frozenset[str] | None) -> Any:
    return fn(**(inputs if names is None else {k: v for k, v in inputs.items() if k in names}))


def bind_hook(
    cls: type, name: str, *, offer_services: bool = False
) -> tuple[Callable[..., Any] | None, frozenset[str] | None]:
    """`cls.name` as `hook(inputs, services=None)`, and the input names it accepts (None: all).

    Only hooks that declare a `services` parameter receive the app services (and only where
    `offer_services`, i.e. native nodes: a pack's `**kwargs` hook sees its inputs alone).
    """
    fn = getattr(cls, name, None)
    if fn is None:
        return None, frozenset()
    accepted = _accepted_names(fn)
    if offer_services and accepted is not None and "services" in accepted:
        # e.g. LoadImage hashes a file in the input folder from the settings in services.
        def with_services(inputs: dict[str, Any], services: Any = None) -> Any:
            return _call_with_known(fn, {**inputs, "services": services}, accepted)

        return with_services, accepted - {"services"}
    return (lambda inputs, services=None: _call_with_known(fn, inputs, accepted)), accepted


def _accepted_names(fn: Callable[..., Any], skip_first: bool = False) -> frozenset[str] | None:
    params = list(inspect.signature(fn).parameters.values())
    if skip_first and params:
        params = params[1:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params)


def _tuple_arity(annotation: Any) -> int | None:
    """Number of elements in a `tuple[A, B]` return annotation (string or typing form), else None."""
    text = annotation if isinstance(annotation, str) else repr(annotation)
    text = text.replace("typing.", "").replace(" ", "")
    if (
        not (text.startswith("tuple[") or text.startswith("Tuple["))
        or not text.endswith("]")
        or "..." in text
    ):
        return None
    body, depth, count = text[6:-1], 0, 1
    for ch in body:
        depth += ch == "["
        depth -= ch == "]"
        count += ch == "," and depth == 0
    return 0 if body in ("", "()") else count


def _resolve_dynamic(schema: Schema) -> Callable[[Any], Schema] | None:
    if not schema.has_dynamic_options:
        return None

    def describe(services: Any) -> Schema:
        inputs = tuple(
            dataclasses.replace(i, options=tuple(i.options(services))) if callable(i.options) else i
            for i in schema.inputs
        )
        return dataclasses.replace(schema, inputs=inputs)

    return describe


def native_node_type(cls: type[Node], *, source: str = "nodes") -> NodeType:
    """Check a native `Node` subclass against its schema and wrap it."""
    schema = getattr(cls, "schema", None)
    if not isinstance(schema, Schema):
        raise NodeDefinitionError(f"{cls.__qualname__}: `schema` must be a Schema")
    where = f"node {schema.node_id!r} ({cls.__module__}.{cls.__qualname__})"
    params = list(inspect.signature(cls.execute).parameters.values())
    wants_ctx = bool(params) and params[0].name == "ctx"
    if wants_ctx:
        params = params[1:]
    declared = {i.name: i for i in schema.inputs} | {h.name: h for h in schema.hidden}
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        missing, extra = sorted(declared.keys() - names), sorted(names - declared.keys())
        if missing or extra:
            raise NodeDefinitionError(
                f"{where}: execute() parameters do not match the schema inputs "
                f"(missing parameters {missing}, undeclared parameters {extra})"
            )
        for p in params:
            spec = schema.input(p.name)
            if spec is not None and spec.optional and p.default is p.empty:
                raise NodeDefinitionError(f"{where}: optional input {p.name!r} needs a default in execute()")
    arity = _tuple_arity(inspect.signature(cls.execute).return_annotation)
    if arity is not None and arity != len(schema.outputs):
        raise NodeDefinitionError(
            f"{where}: execute() is annotated to return {arity} values "
            f"but the schema declares {len(schema.outputs)} outputs"
        )

    execute = cls.execute

    def invoke(ctx: NodeContext, inputs: dict[str, Any]) -> NodeOutput:
        blocker = find_blocker(inputs)
        if blocker is not None:
            return blocked_output(blocker, schema)
        raw = execute(ctx, **inputs) if wants_ctx else execute(**inputs)
        return normalize_result(raw, schema)

    fingerprint, _ = bind_hook(cls, "fingerprint", offer_services=True)
    validate, validate_names = bind_hook(cls, "validate_inputs", offer_services=True)
    lazy, _ = bind_hook(cls, "check_lazy_status")
    return NodeType(
        schema,
        invoke,
        source=source,
        describe_fn=_resolve_dynamic(schema),
        fingerprint=fingerprint,
        validate_inputs=validate,
        validate_names=validate_names,
        check_lazy_status=lazy,
        origin=cls,
    )


class NodeRegistry:
    """Node types by id. Filled at startup (built-ins, then packs) and read-only afterwards."""

    def __init__(self) -> None:
        self._types: dict[str, NodeType] = {}

    def add(self, node_type: NodeType) -> NodeType:
        previous = self._types.get(node_type.node_id)
        if previous is not None:
            log.warning(
                "node %r from %s overrides the one from %s",
                node_type.node_id,
                node_type.source,
                previous.source,
            )
        self._types[node_type.node_id] = node_type
        return node_type

    def register(self, cls: type, *, source: str = "nodes") -> NodeType:
        """Register a native Node subclass, a ComfyUI V1 class or a V3 class."""
        from . import adapters  # adapters import this module

        if isinstance(getattr(cls, "schema", None), Schema):
            return self.add(native_node_type(cls, source=source))
        if hasattr(cls, "INPUT_TYPES"):
            raise NodeDefinitionError(f"{cls.__qualname__}: V1 classes need a node id; use register_v1()")
        if hasattr(cls, "define_schema"):
            return self.add(adapters.v3_node_type(cls, source=source))
        raise NodeDefinitionError(
            f"{cls.__qualname__} is not a node: no Schema, INPUT_TYPES or define_schema"
        )

    def register_v1(
        self, node_id: str, cls: type, *, display_name: str | None = None, source: str = "nodes"
    ) -> NodeType:
        from . import adapters

        return self.add(adapters.v1_node_type(node_id, cls, display_name=display_name, source=source))

    def get(self, node_id: str) -> NodeType | None:
        return self._types.get(node_id)

    def __getitem__(self, node_id: str) -> NodeType:
        return self._types[node_id]

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._types

    def __iter__(self) -> Iterator[NodeType]:
        return iter(self._types.values())

    def __len__(self) -> int:
        return len(self._types)

    def ids(self) -> list[str]:
        return list(self._types)
