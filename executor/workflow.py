"""Workflow files in every form -> API prompts.

A UI-format workflow (what the canvas saves: LiteGraph `nodes` + `links`, schema 0.4 or 1, with
subgraphs under `definitions.subgraphs`) is converted with our node schemas the way the official
frontend's "queue" does it:

- `widgets_values` are mapped onto the node's widget inputs in schema order (required, then optional),
  skipping the hidden `control_after_generate` slots; `widgets_values_named` and dict-form values are
  read by name;
- an input connected by a link (sockets and converted widgets) takes the link instead of the value;
- PrimitiveNode values are pushed into their targets, Reroutes followed, muted nodes (mode 2) dropped
  with the links that start at them, bypassed nodes (mode 4) pass a matching input through;
- Note/MarkdownNote and groups are ignored; subgraph instances are flattened into ids like `12:5`.

`to_api_prompt` accepts any of: an API prompt, `{"prompt": ...}`, a UI workflow, `{"workflow": ...}`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .errors import PromptValidationError
from .registry import NodeRegistry
from .schema import COMBO, FLOAT, INT, Input, Schema
from .workflow_graph import (
    MODE_BYPASS,
    MODE_MUTED,
    VIRTUAL_TYPES,
    Resolver,
    Scope,
    Source,
    UiNode,
    Value,
    WorkflowFormatError,
    collect_subgraphs,
    parse_graph,
)

log = logging.getLogger(__name__)

SEED_NAMES = frozenset({"seed", "noise_seed"})


def is_api_prompt(data: Any) -> bool:
    """An API prompt: a non-empty object whose values are `{class_type, inputs}` objects."""
    return (
        isinstance(data, Mapping)
        and bool(data)
        and all(isinstance(v, Mapping) and isinstance(v.get("class_type"), str) for v in data.values())
    )


def is_ui_workflow(data: Any) -> bool:
    """A UI workflow: an object with a `nodes` list (links may be absent in a one-node graph)."""
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list)


def widget_slots(schema: Schema) -> list[Input | None]:
    """The positional layout of `widgets_values` for a node: one entry per slot, None for hidden slots.

    Order is the node's input order (required, then optional), widget inputs only. A seed INT (or an
    INT/FLOAT/COMBO flagged `control_after_generate`) is followed by its control-mode slot; a combo's
    control adds a second slot (the filter). Frontend extras such as LoadImage's upload button come
    after every input, so they never shift a mapped slot.
    """
    ordered = [i for i in schema.inputs if not i.optional] + [i for i in schema.inputs if i.optional]
    slots: list[Input | None] = []
    for spec in ordered:
        if not spec.is_widget:
            continue
        slots.append(spec)
        if spec.type == INT and (spec.control_after_generate or spec.name in SEED_NAMES):
            slots.append(None)
        elif spec.type == FLOAT and spec.control_after_generate:
            slots.append(None)
        elif spec.type == COMBO and spec.control_after_generate:
            slots.extend((None, None))
    return slots


def _api_value(value: Any) -> Any:
    # A bare list would read as a link [node_id, slot]; the frontend wraps list values the same way.
    return {"__value__": value} if isinstance(value, list) else value


def _widget_inputs(resolver: Resolver, scope: Scope, node: UiNode, schema: Schema) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for index, spec in enumerate(widget_slots(schema)):
        if spec is None:
            continue
        value = resolver.widget_value(scope, node, spec.name, index)
        if value is None:  # the widget was never saved: the frontend would show its default
            value = spec.default
            if value is None and spec.type == COMBO and isinstance(spec.options, tuple) and spec.options:
                value = spec.options[0]
        if value is not None:
            inputs[spec.name] = _api_value(value)
    return inputs


def _linked_inputs(resolver: Resolver, scope: Scope, node: UiNode, inputs: dict[str, Any]) -> None:
    for index, slot in enumerate(node.inputs):
        if slot.get("link") is None:
            continue
        widget = slot.get("widget")
        name = widget.get("name") if isinstance(widget, Mapping) and widget.get("name") else slot.get("name")
        if not isinstance(name, str):
            raise scope.error(node, f"input #{index} has no name")
        resolved = resolver.resolve_input(scope, node, index)
        if isinstance(resolved, Source):
            inputs[name] = [resolved.exec_id, resolved.slot]
        elif isinstance(resolved, Value):
            inputs[name] = _api_value(resolved.value)
        # None (unconnected upstream, muted source): a widget keeps its value, a socket stays empty.


class _Converter:
    def __init__(self, registry: NodeRegistry, services: Any, resolver: Resolver) -> None:
        self.registry = registry
        self.services = services
        self.resolver = resolver
        self.prompt: dict[str, dict[str, Any]] = {}
        self.missing: dict[str, tuple[str, str]] = {}  # exec id -> (type, title)
        self.broken: dict[str, WorkflowFormatError] = {}
        self._schemas: dict[str, Schema] = {}

    def schema(self, class_type: str) -> Schema | None:
        found = self._schemas.get(class_type)
        if found is None:
            node_type = self.registry.get(class_type)
            if node_type is None:
                return None
            try:
                found = node_type.describe(self.services)
            except Exception:  # a pack's INPUT_TYPES may fail; its static schema still maps widgets
                log.exception("describing node type %r failed; using its registered schema", class_type)
                found = node_type.schema
            self._schemas[class_type] = found
        return found

    def emit(self, scope: Scope) -> None:
        for node in scope.graph.nodes.values():
            if node.mode in (MODE_MUTED, MODE_BYPASS):
                continue
            if node.type in self.resolver.subgraphs:
                self.emit(self.resolver.child(scope, node))
                continue
            if node.type in VIRTUAL_TYPES:
                continue
            exec_id = scope.exec_id(node.node_id)
            schema = self.schema(node.type)
            if schema is None:
                self.missing[exec_id] = (node.type, node.title or node.type)
                continue
            try:
                inputs = _widget_inputs(self.resolver, scope, node, schema)
                _linked_inputs(self.resolver, scope, node, inputs)
            except WorkflowFormatError as exc:
                self.broken[exc.node_id or exec_id] = exc
                continue
            self.prompt[exec_id] = {
                "inputs": inputs,
                "class_type": node.type,
                "_meta": {"title": node.title or schema.title},
            }

    def finish(self) -> dict[str, dict[str, Any]]:
        if self.missing:
            raise _missing_types_error(self.missing)
        if self.broken:
            raise _broken_links_error(self.broken)
        for entry in self.prompt.values():  # links to nodes that were not emitted are dropped
            inputs = entry["inputs"]
            for name in [k for k, v in inputs.items() if isinstance(v, list) and v[0] not in self.prompt]:
                del inputs[name]
        return self.prompt


def _err(kind: str, message: str, details: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _missing_types_error(missing: dict[str, tuple[str, str]]) -> PromptValidationError:
    names = sorted({t for t, _ in missing.values()})
    first_id, (first_type, first_title) = next(iter(missing.items()))
    return PromptValidationError(
        _err(
            "missing_node_type",
            f"Cannot convert the workflow because node types {names} do not exist.",
            "; ".join(f"node {nid}: {t}" for nid, (t, _) in missing.items()),
            node_id=first_id,
            class_type=first_type,
            node_title=first_title,
        ),
        {
            nid: {
                "errors": [_err("missing_node_type", f"Node type '{t}' does not exist", t)],
                "dependent_outputs": [],
                "class_type": t,
            }
            for nid, (t, _) in missing.items()
        },
    )


def _broken_links_error(broken: dict[str, WorkflowFormatError]) -> PromptValidationError:
    return PromptValidationError(
        _err("invalid_workflow", "Invalid workflow", "; ".join(str(e) for e in broken.values())),
        {
            nid: {
                "errors": [_err("bad_linked_input", "Bad link in workflow", exc.message)],
                "dependent_outputs": [],
                "class_type": exc.class_type,
            }
            for nid, exc in broken.items()
        },
    )


def ui_to_api(workflow: dict, registry: NodeRegistry, services: Any = None) -> dict:
    """Convert a UI-format workflow to an API prompt `{id: {class_type, inputs, _meta}}`.

    Raises PromptValidationError: `missing_node_type` naming every unknown node type (with one
    `node_errors` entry per node), or `invalid_workflow` for links that point nowhere or loop.
    """
    try:
        if not is_ui_workflow(workflow):
            raise WorkflowFormatError("workflow", "a UI workflow is an object with a 'nodes' list")
        root = parse_graph(workflow, "workflow")
        resolver = Resolver(collect_subgraphs(workflow))
    except WorkflowFormatError as exc:
        raise PromptValidationError(_err("invalid_workflow", "Invalid workflow", str(exc))) from None
    converter = _Converter(registry, services, resolver)
    converter.emit(Scope(root))
    return converter.finish()


def to_api_prompt(data: Any, registry: NodeRegistry, services: Any = None) -> dict:
    """Any workflow document -> API prompt: API JSON as is, UI JSON converted, wrappers unwrapped.

    Wrappers: `{"prompt": api}` (a /prompt body or history entry) and `{"workflow": ui}` (extra_pnginfo).
    """
    if is_ui_workflow(data):
        return ui_to_api(data, registry, services)
    if isinstance(data, Mapping):
        if isinstance(data.get("prompt"), Mapping):
            return dict(data["prompt"])
        if is_ui_workflow(data.get("workflow")):
            return ui_to_api(data["workflow"], registry, services)
        if data and all(isinstance(v, Mapping) for v in data.values()):
            return dict(data)  # API format; validation reports per-node problems such as a missing class_type
    raise PromptValidationError(
        _err(
            "invalid_prompt",
            "Invalid prompt",
            "not a workflow: expected an API prompt (node id -> {class_type, inputs}) "
            "or a UI workflow (an object with 'nodes' and 'links')",
        )
    )
