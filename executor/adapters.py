"""Adapters from ComfyUI's V1 (`INPUT_TYPES`) and V3 (`define_schema`) node classes to `NodeType`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .errors import NodeDefinitionError
from .registry import NodeType, _accepted_names, bind_hook, blocked_output, find_blocker, normalize_result
from .schema import ANY, COMBO, PROMPT_HIDDEN, Hidden, Input, NodeContext, NodeOutput, Output, Schema

# The context of the V1/V3 node running in this thread: ComfyUI's module-level helpers that packs call
# (progress bars, interruption checks, `PromptServer.instance.last_node_id`) find it here.
_CURRENT: contextvars.ContextVar[NodeContext | None] = contextvars.ContextVar("current_node", default=None)


def current_context() -> NodeContext | None:
    """The NodeContext of the pack node running in this thread, or None outside one."""
    return _CURRENT.get()


@contextlib.contextmanager
def running(ctx: NodeContext) -> Iterator[None]:
    token = _CURRENT.set(ctx)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def settle(value: Any) -> Any:
    """Await an awaitable result (async `execute`/FUNCTION, V3 entry points) on a private loop.

    The worker thread has no loop; where this thread already runs one, a helper thread runs it.
    """
    if not inspect.isawaitable(value):
        return value

    async def wait() -> Any:
        return await value

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, wait()).result()


_PROBE = "\x00fluxloom-type-probe\x00"


def is_wildcard(kind: Any) -> bool:
    """ComfyUI's "match anything" type: "*", or a str subclass that compares equal to every type
    (packs override `__ne__` to return False, or `__eq__` to return True)."""
    if not isinstance(kind, str):
        return False
    if str.__eq__(kind, ANY):
        return True
    if type(kind) is str:
        return False
    try:
        return bool(kind == _PROBE) or not bool(kind != _PROBE)
    except Exception:
        return False


def type_name(kind: Any) -> str:
    """A declared socket type as a plain string: wildcards become "*", combo lists "COMBO"."""
    if is_wildcard(kind):
        return ANY
    if isinstance(kind, (list, tuple)):
        return COMBO
    return str.__str__(kind) if isinstance(kind, str) else str(kind)


# Spec option keys (ComfyUI spelling) that map onto Input fields; the rest pass through in `extra`.
_SPEC_FIELDS = {
    "default": "default",
    "min": "min",
    "max": "max",
    "step": "step",
    "round": "round",
    "multiline": "multiline",
    "dynamicPrompts": "dynamic_prompts",
    "control_after_generate": "control_after_generate",
    "forceInput": "force_input",
    "lazy": "lazy",
    "rawLink": "raw_link",
    "tooltip": "tooltip",
}


def input_from_spec(name: str, spec: Sequence[Any] | str, *, optional: bool = False) -> Input:
    """Build an Input from a ComfyUI spec: `[type]`, `[type, {options}]` or `[[choices], {options}]`."""
    if isinstance(spec, str):
        spec = (spec,)
    if not spec:
        raise NodeDefinitionError(f"input {name!r}: empty spec")
    kind, opts = spec[0], dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    fields: dict[str, Any] = {}
    for key in list(opts):
        if key in _SPEC_FIELDS:
            fields[_SPEC_FIELDS[key]] = opts.pop(key)
    opts.pop("optional", None)
    if is_wildcard(kind):  # before any comparison: such a type "equals" COMBO too
        return Input(name, ANY, optional=optional, extra=opts, **fields)
    if isinstance(kind, (list, tuple)):
        return Input(
            name, COMBO, optional=optional, options=tuple(str(c) for c in kind), extra=opts, **fields
        )
    if str.__eq__(str(kind), COMBO):
        choices = opts.pop("options", ())
        return Input(
            name,
            COMBO,
            optional=optional,
            options=tuple(str(c) for c in choices),
            extra=opts,
            legacy_combo=False,
            **fields,
        )
    return Input(name, type_name(kind), optional=optional, extra=opts, **fields)


def _inputs_from_v1(node_id: str, cls: Any) -> tuple[tuple[Input, ...], tuple[Hidden, ...]]:
    declared = cls.INPUT_TYPES()
    if not isinstance(declared, Mapping):
        raise NodeDefinitionError(f"node {node_id!r}: INPUT_TYPES() must return a dict")
    inputs = [input_from_spec(n, s) for n, s in (declared.get("required") or {}).items()]
    inputs += [input_from_spec(n, s, optional=True) for n, s in (declared.get("optional") or {}).items()]
    hidden = [Hidden(n, str(k)) for n, k in (declared.get("hidden") or {}).items()]
    return tuple(inputs), tuple(hidden)


def _v1_schema(node_id: str, cls: Any, display_name: str | None, source: str) -> Schema:
    inputs, hidden = _inputs_from_v1(node_id, cls)
    types = tuple(cls.RETURN_TYPES)
    names = tuple(getattr(cls, "RETURN_NAMES", None) or ())
    is_list = tuple(getattr(cls, "OUTPUT_IS_LIST", None) or ())
    tips = tuple(getattr(cls, "OUTPUT_TOOLTIPS", None) or ())
    for label, values in (("RETURN_NAMES", names), ("OUTPUT_IS_LIST", is_list)):
        if values and len(values) != len(types):
            raise NodeDefinitionError(
                f"node {node_id!r}: {label} has {len(values)} entries for {len(types)} RETURN_TYPES"
            )
    outputs = tuple(
        Output(
            type_name(t),
            names[i] if i < len(names) else None,
            bool(is_list[i]) if i < len(is_list) else False,
            tips[i] if i < len(tips) else None,
        )
        for i, t in enumerate(types)
    )
    return Schema(
        node_id,
        inputs=inputs,
        outputs=outputs,
        hidden=hidden,
        category=getattr(cls, "CATEGORY", "sd"),
        display_name=display_name,
        description=getattr(cls, "DESCRIPTION", "") or "",
        is_output_node=bool(getattr(cls, "OUTPUT_NODE", False)),
        is_input_list=bool(getattr(cls, "INPUT_IS_LIST", False)),
        not_idempotent=bool(getattr(cls, "NOT_IDEMPOTENT", False)),
        deprecated=bool(getattr(cls, "DEPRECATED", False)),
        experimental=bool(getattr(cls, "EXPERIMENTAL", False)),
        has_intermediate_output=bool(getattr(cls, "HAS_INTERMEDIATE_OUTPUT", False)),
        python_module=source,
        search_aliases=tuple(getattr(cls, "SEARCH_ALIASES", ()) or ()),
    )


def v1_node_type(
    node_id: str, cls: Any, *, display_name: str | None = None, source: str = "nodes"
) -> NodeType:
    """Wrap a ComfyUI V1 class (INPUT_TYPES, RETURN_TYPES, FUNCTION, ...)."""
    where = f"node {node_id!r} ({getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls)})"
    for attr in ("INPUT_TYPES", "RETURN_TYPES", "FUNCTION"):
        if not hasattr(cls, attr):
            raise NodeDefinitionError(f"{where}: missing {attr}")
    function = getattr(cls, cls.FUNCTION, None)
    if not callable(function):
        raise NodeDefinitionError(f"{where}: FUNCTION names {cls.FUNCTION!r}, which is not a method")
    try:
        schema = _v1_schema(node_id, cls, display_name, source)
    except NodeDefinitionError:
        raise
    except Exception as exc:  # a pack's INPUT_TYPES may fail in any way
        raise NodeDefinitionError(f"{where}: describing the node failed: {exc!r}") from exc
    accepted = _accepted_names(
        function,
        skip_first=not isinstance(inspect.getattr_static(cls, cls.FUNCTION), (classmethod, staticmethod)),
    )
    if accepted is not None:
        missing = sorted(i.name for i in schema.inputs if not i.optional and i.name not in accepted)
        if missing:
            raise NodeDefinitionError(f"{where}: {cls.FUNCTION}() does not take required inputs {missing}")

    instances: dict[str, Any] = {}  # ComfyUI keeps one instance per node id; some packs rely on it

    def instance(node: str) -> Any:
        obj = instances.get(node)
        if obj is None:
            obj = instances[node] = cls()
        return obj

    def invoke(ctx: NodeContext, inputs: dict[str, Any]) -> NodeOutput:
        blocker = find_blocker(inputs)
        if blocker is not None:
            return blocked_output(blocker, schema)
        with running(ctx):
            raw = settle(getattr(instance(ctx.node_id), cls.FUNCTION)(**inputs))
        if isinstance(raw, dict):  # ComfyUI reads only these keys of a dict result ({} = nothing)
            raw = NodeOutput(tuple(raw.get("result") or ()), ui=raw.get("ui"), expand=raw.get("expand"))
        elif isinstance(raw, (tuple, list)) and len(raw) > len(schema.outputs):
            raw = tuple(raw[: len(schema.outputs)])  # ComfyUI ignores values beyond RETURN_TYPES
        return normalize_result(raw, schema)

    def describe(_services: Any) -> Schema:
        return _v1_schema(node_id, cls, display_name, source)

    fingerprint, _ = bind_hook(cls, "IS_CHANGED")
    validate, validate_names = bind_hook(cls, "VALIDATE_INPUTS")
    lazy = None
    if hasattr(cls, "check_lazy_status"):

        def lazy(inputs: dict[str, Any]) -> Sequence[str]:
            return cls().check_lazy_status(**inputs) or ()

    return NodeType(
        schema,
        invoke,
        source=source,
        describe_fn=describe,
        fingerprint=fingerprint,
        validate_inputs=validate,
        validate_names=validate_names,
        check_lazy_status=lazy,
        origin=cls,
    )


# --- V3 ---------------------------------------------------------------------------------------------


def _v3_schema(cls: Any, source: str) -> Schema:
    spec = cls.define_schema()
    inputs = tuple(
        input_from_spec(i.id, (i.get_io_type(), i.as_dict()), optional=bool(getattr(i, "optional", False)))
        for i in getattr(spec, "inputs", None) or ()
    )
    outputs = tuple(
        Output(
            type_name(o.get_io_type()),
            getattr(o, "display_name", None),
            bool(getattr(o, "is_output_list", False)),
            getattr(o, "tooltip", None),
        )
        for o in getattr(spec, "outputs", None) or ()
    )
    hidden = [Hidden(_hidden_name(h), _hidden_kind(h)) for h in getattr(spec, "hidden", None) or ()]
    is_output = bool(getattr(spec, "is_output_node", False))
    if is_output:
        hidden += [h for h in PROMPT_HIDDEN if h.name not in {x.name for x in hidden}]
    return Schema(
        spec.node_id,
        inputs=inputs,
        outputs=outputs,
        hidden=tuple(hidden),
        category=getattr(spec, "category", None) or "sd",
        display_name=getattr(spec, "display_name", None),
        description=getattr(spec, "description", "") or "",
        is_output_node=is_output,
        is_input_list=bool(getattr(spec, "is_input_list", False)),
        not_idempotent=bool(getattr(spec, "not_idempotent", False)),
        deprecated=bool(getattr(spec, "is_deprecated", False)),
        experimental=bool(getattr(spec, "is_experimental", False)),
        python_module=source,
        search_aliases=tuple(getattr(spec, "search_aliases", None) or ()),
    )


def _hidden_kind(h: Any) -> str:
    return str(getattr(h, "value", h))


def _hidden_name(h: Any) -> str:
    return getattr(h, "name", None) or _hidden_kind(h).lower()


class HiddenValues:
    """What a V3 node reads as `cls.hidden.unique_id`, `cls.hidden.prompt`, ..."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # undeclared hidden values read as None, as in ComfyUI
        return None


def v3_node_type(cls: Any, *, source: str = "nodes") -> NodeType:
    """Wrap a ComfyUI V3 class (`define_schema()` + classmethod `execute`)."""
    try:
        schema = _v3_schema(cls, source)
    except Exception as exc:
        raise NodeDefinitionError(f"{cls.__qualname__}: define_schema() failed: {exc!r}") from exc
    hidden_names = frozenset(h.name for h in schema.hidden)

    def invoke(ctx: NodeContext, inputs: dict[str, Any]) -> NodeOutput:
        blocker = find_blocker(inputs)
        if blocker is not None:
            return blocked_output(blocker, schema)
        hidden = {k: inputs.pop(k) for k in list(inputs) if k in hidden_names}
        # V3 nodes read hidden values from the class; run a per-call subclass so calls never share them.
        runner: Any = type(cls.__name__, (cls,), {"hidden": HiddenValues(hidden)}) if hidden else cls
        with running(ctx):
            raw = settle(runner.execute(**inputs))
        return normalize_result(raw, schema)

    fingerprint, _ = bind_hook(cls, "fingerprint_inputs")
    validate, validate_names = bind_hook(cls, "validate_inputs")
    lazy, _ = bind_hook(cls, "check_lazy_status")
    return NodeType(
        schema,
        invoke,
        source=source,
        describe_fn=lambda _s: _v3_schema(cls, source),
        fingerprint=fingerprint,
        validate_inputs=validate,
        validate_names=validate_names,
        check_lazy_status=lazy,
        origin=cls,
    )
