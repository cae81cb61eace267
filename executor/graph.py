"""Parse and validate API-format prompts, collecting every error per node in ComfyUI's shape."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .errors import PromptValidationError
from .order import cycle_members, dependency_closure, topological_order
from .registry import NodeRegistry, NodeType
from .schema import ANY, BOOLEAN, COMBO, FLOAT, INT, STRING, Input, Schema


class Link(NamedTuple):
    """A connection to output `index` of node `node_id`."""

    node_id: str
    slot: int


class PromptNode:
    """One node of a prompt. Links never change after parsing (only literals are coerced)."""

    __slots__ = ("node_id", "class_type", "inputs", "title", "link_items", "sources")

    def __init__(
        self, node_id: str, class_type: str, inputs: dict[str, Any], title: str | None = None
    ) -> None:
        self.node_id = node_id
        self.class_type = class_type
        self.inputs = inputs  # literals (coerced by validation) and Links
        self.title = title
        self.link_items = tuple((k, v) for k, v in inputs.items() if type(v) is Link)
        self.sources = frozenset(v.node_id for _, v in self.link_items)

    def links(self) -> tuple[tuple[str, Link], ...]:
        return self.link_items


@dataclass
class ValidatedPrompt:
    nodes: dict[str, PromptNode]
    outputs: tuple[str, ...]
    node_errors: dict[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = ()  # dependency order of every node the outputs need
    # Filled by the first run when no node has a fingerprint: a re-run of the same prompt reuses them.
    signatures: dict[str, str] | None = None


def volatile_nodes(validated: ValidatedPrompt, registry: NodeRegistry) -> list[str]:
    """Nodes whose validity can change without the prompt changing (live option lists, own validators)."""
    out = []
    for node_id in validated.order:
        node_type = registry.get(validated.nodes[node_id].class_type)
        if node_type is None or node_type.describe_fn is not None or node_type.validate_inputs is not None:
            out.append(node_id)
    return out


def still_valid(validated: ValidatedPrompt, registry: NodeRegistry, *, services: Any = None) -> bool:
    """Re-check the volatile nodes of an earlier validation of the same prompt."""
    volatile = volatile_nodes(validated, registry)
    if not volatile:
        return True
    if any(validated.nodes[n].class_type not in registry for n in volatile):
        return False
    nodes = validated.nodes
    schemas: dict[str, Schema] = {}
    for node_id in {s for n in volatile for s in nodes[n].sources} | set(volatile):
        schemas[node_id] = registry[nodes[node_id].class_type].describe(services)
    return not any(
        _node_errors(nodes[n], schemas[n], registry[nodes[n].class_type], nodes, schemas, services)
        for n in volatile
    )


def error(kind: str, message: str, details: str = "", **extra_info: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info}


def to_link(value: Any) -> Link | None:
    """A JSON `[node_id, index]` pair as a Link, else None."""
    if type(value) is Link:
        return value
    if type(value) is list and len(value) == 2:
        source, index = value
        if type(index) is int and type(source) in (str, int):
            return Link(str(source), index)
    return None


def parse_prompt(prompt: Any) -> dict[str, PromptNode]:
    """API-format prompt -> nodes. Raises PromptValidationError for a malformed document."""
    if not isinstance(prompt, Mapping) or not prompt:
        raise PromptValidationError(
            error(
                "invalid_prompt",
                "Invalid prompt",
                "the prompt must be a non-empty object mapping node ids to {class_type, inputs}",
            )
        )
    nodes: dict[str, PromptNode] = {}
    problems: dict[str, Any] = {}
    for raw_id, raw in prompt.items():
        node_id = str(raw_id)
        if not isinstance(raw, Mapping) or not isinstance(raw.get("class_type"), str):
            problems[node_id] = {
                "errors": [
                    error(
                        "invalid_prompt",
                        "Node has no class_type",
                        f"node {node_id} must be an object with a 'class_type' string",
                    )
                ],
                "dependent_outputs": [],
                "class_type": None,
            }
            continue
        raw_inputs = raw.get("inputs") or {}
        if not isinstance(raw_inputs, Mapping):
            raw_inputs = {}
        inputs = {
            k if type(k) is str else str(k): (to_link(v) or v) if type(v) is list else v
            for k, v in raw_inputs.items()
        }
        meta = raw.get("_meta")
        title = meta.get("title") if isinstance(meta, Mapping) else None
        nodes[node_id] = PromptNode(node_id, raw["class_type"], inputs, title)
    if problems:
        raise PromptValidationError(
            error(
                "invalid_prompt",
                "Invalid prompt",
                "; ".join(f"node {k}: {v['errors'][0]['details']}" for k, v in problems.items()),
            ),
            problems,
        )
    return nodes


def types_compatible(received: str, expected: str) -> bool:
    """ComfyUI's rule: `*` matches anything; comma-separated unions match when they share a type."""
    if received == expected or received == ANY or expected == ANY:
        return True
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


_COERCE = {INT: int, FLOAT: float, STRING: str, BOOLEAN: bool}


def _coerce(spec: Input, value: Any) -> Any:
    if spec.type == INT and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value} is not a whole number")
    if spec.type in (INT, FLOAT) and isinstance(value, str):
        value = value.strip()
    return _COERCE[spec.type](value)


def _check_literal(spec: Input, value: Any, self_validated: bool) -> tuple[Any, dict[str, Any] | None]:
    """Coerce a literal and check range / choices. Returns (value, error or None)."""
    name = spec.name
    config = {"input_name": name, "received_value": value}
    if spec.type in _COERCE:
        try:
            value = _coerce(spec, value)
        except (TypeError, ValueError) as exc:
            return value, error(
                "invalid_input_type",
                f"Failed to convert an input value to a {spec.type} value",
                f"{name}, {value!r}, {exc}",
                **config,
            )
        if self_validated or spec.type not in (INT, FLOAT):
            return value, None
        if spec.min is not None and value < spec.min:
            return value, error(
                "value_smaller_than_min", f"Value {value} smaller than min of {spec.min}", f"{name}", **config
            )
        if spec.max is not None and value > spec.max:
            return value, error(
                "value_bigger_than_max", f"Value {value} bigger than max of {spec.max}", f"{name}", **config
            )
    elif (
        spec.type == COMBO
        and not self_validated
        and isinstance(spec.options, tuple)  # a provider not yet resolved by describe() is not checked
        and not spec.extra.get("remote")
        and not spec.extra.get("multiselect")
    ):
        options = spec.options
        if value not in options:
            shown = list(options) if len(options) <= 20 else None
            preview = list(options[:20]) + (["..."] if len(options) > 20 else [])
            return value, error(
                "value_not_in_list",
                "Value not in list",
                f"{name}: '{value}' not in {preview}",
                input_config=shown,
                **config,
            )
    return value, None


def _node_errors(
    node: PromptNode,
    schema: Schema,
    node_type: NodeType,
    nodes: Mapping[str, PromptNode],
    schemas: Mapping[str, Schema],
    services: Any = None,
) -> list[dict[str, Any]]:
    """Validate one node's own inputs (coercing literals in place); upstream problems are not its errors."""
    errors: list[dict[str, Any]] = []
    inputs = node.inputs
    self_checked = node_type.validate_names
    skip_types = self_checked is None or "input_types" in self_checked
    for spec in schema.inputs:
        name = spec.name
        if name not in inputs:
            if not spec.optional:
                errors.append(
                    error("required_input_missing", "Required input is missing", name, input_name=name)
                )
            continue
        value = inputs[name]
        if isinstance(value, Link):
            source = nodes.get(value.node_id)
            source_schema = schemas.get(value.node_id)
            if source is None or source_schema is None:
                errors.append(
                    error(
                        "bad_linked_input",
                        "Linked node not found",
                        f"{name} is linked to node {value.node_id}, which is not in the prompt",
                        input_name=name,
                        received_value=list(value),
                    )
                )
            elif not 0 <= value.slot < len(source_schema.outputs):
                errors.append(
                    error(
                        "bad_linked_input",
                        "Bad linked input, output index out of range",
                        f"{name} is linked to output {value.slot} of node {value.node_id} "
                        f"({source.class_type}), which has {len(source_schema.outputs)} outputs",
                        input_name=name,
                        received_value=list(value),
                    )
                )
            elif not skip_types:
                received = source_schema.outputs[value.slot].type
                if not types_compatible(received, spec.type):
                    errors.append(
                        error(
                            "return_type_mismatch",
                            "Return type mismatch between linked nodes",
                            f"{name}, received_type({received}) mismatch input_type({spec.type})",
                            input_name=name,
                            received_type=received,
                            linked_node=list(value),
                        )
                    )
            continue
        if isinstance(value, list):
            errors.append(
                error(
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [string, int]",
                    name,
                    input_name=name,
                    received_value=value,
                )
            )
            continue
        coerced, problem = _check_literal(spec, value, self_checked is None or name in self_checked)
        inputs[name] = coerced
        if problem:
            errors.append(problem)
    if node_type.validate_inputs is not None and not errors:
        literals = {
            s.name: (None if isinstance(inputs.get(s.name), Link) else inputs.get(s.name))
            for s in schema.inputs
            if s.name in inputs
        }
        if "input_types" in (self_checked or ()):
            literals["input_types"] = {k: schemas[v.node_id].outputs[v.slot].type for k, v in node.links()}
        try:
            result = node_type.validate_inputs(literals, services)
        except Exception as exc:  # a node's own validator may raise anything; report it, never crash
            errors.append(
                error(
                    "exception_during_inner_validation",
                    "Exception when validating inner node",
                    f"{type(exc).__name__}: {exc}",
                    exception_type=type(exc).__name__,
                )
            )
        else:
            if result is not True:
                errors.append(
                    error("custom_validation_failed", "Custom validation failed for node", str(result))
                )
    return errors


def validate_prompt(
    prompt: Any, registry: NodeRegistry, *, services: Any = None, targets: Iterable[str] | None = None
) -> ValidatedPrompt:
    """Validate everything before running. Raises PromptValidationError when no output can run."""
    nodes = parse_prompt(prompt)
    missing = {nid: n.class_type for nid, n in nodes.items() if n.class_type not in registry}
    if missing:
        names = sorted(set(missing.values()))
        raise PromptValidationError(
            error(
                "missing_node_type",
                f"Cannot execute because node types {names} do not exist.",
                "; ".join(f"node {nid}: {ct}" for nid, ct in missing.items()),
                node_id=next(iter(missing)),
                class_type=next(iter(missing.values())),
                node_title=nodes[next(iter(missing))].title or next(iter(missing.values())),
            ),
            {
                nid: {
                    "errors": [error("missing_node_type", f"Node type '{ct}' does not exist", ct)],
                    "dependent_outputs": [],
                    "class_type": ct,
                }
                for nid, ct in missing.items()
            },
        )
    described: dict[str, Schema] = {}
    schemas: dict[str, Schema] = {}
    for node_id, node in nodes.items():
        schema = described.get(node.class_type)
        if schema is None:
            schema = described[node.class_type] = registry[node.class_type].describe(services)
        schemas[node_id] = schema
    outputs = [nid for nid in nodes if schemas[nid].is_output_node]
    if targets is not None:
        wanted = {str(t) for t in targets}
        outputs = [nid for nid in outputs if nid in wanted]
    if not outputs:
        raise PromptValidationError(
            error(
                "prompt_no_outputs",
                "Prompt has no outputs",
                "add an output node such as SaveImage or PreviewImage",
            )
        )

    involved = dependency_closure(outputs, nodes)
    own_errors: dict[str, list[dict[str, Any]]] = {}
    for node_id in involved:
        node = nodes[node_id]
        errs = _node_errors(node, schemas[node_id], registry[node.class_type], nodes, schemas, services)
        if errs:
            own_errors[node_id] = errs
    ordered, blocked = topological_order(involved, nodes)
    cycle = sorted(cycle_members(blocked, nodes))
    for node_id in cycle:
        own_errors.setdefault(node_id, []).append(
            error(
                "dependency_cycle",
                "Dependency cycle detected",
                f"nodes {', '.join(cycle)} depend on each other",
                cycle_nodes=list(cycle),
            )
        )

    bad = set(own_errors) | set(blocked)
    for node_id in ordered:  # upstream errors make downstream nodes invalid, without reasons of their own
        if not nodes[node_id].sources.isdisjoint(bad):
            bad.add(node_id)
    good_outputs = tuple(o for o in outputs if o not in bad)

    node_errors: dict[str, Any] = {}
    if own_errors:
        for output in outputs:
            if output in bad:
                for node_id in dependency_closure([output], nodes):
                    if node_id in own_errors:
                        entry = node_errors.setdefault(
                            node_id,
                            {
                                "errors": own_errors[node_id],
                                "dependent_outputs": [],
                                "class_type": nodes[node_id].class_type,
                            },
                        )
                        entry["dependent_outputs"].append(output)
    if not good_outputs:
        details = "\n".join(f"{e['message']}: {e['details']}" for errs in own_errors.values() for e in errs)
        raise PromptValidationError(
            error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
            node_errors,
        )
    return ValidatedPrompt(nodes, good_outputs, node_errors, tuple(ordered))
