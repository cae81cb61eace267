"""Parse and validate API-format prompts, collecting every error per node in ComfyUI's shape."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .errors import PromptValidationError
from .order import components, dependency_closure, is_cycle, topological_order
from .registry import NodeRegistry, NodeType
from .schema import ANY, BOOLEAN, COMBO, FLOAT, INT, STRING, Input, Schema

# Reports stay linear in the prompt's size: a cycle names at most this many members (then a count),
# an error lists at most this many dependent outputs, and echoed values are cut to SHOWN_CHARS.
CYCLE_NAMES_LIMIT = 20
DEPENDENT_OUTPUTS_LIMIT = 100
SHOWN_CHARS = 200

# Socket types that only a link can provide: a literal for one of them is refused before queueing.
# (Custom types are left alone: a frontend extension may give them a widget.)
LINK_ONLY_TYPES = frozenset(
    {
        "MODEL",
        "CLIP",
        "VAE",
        "CONDITIONING",
        "LATENT",
        "IMAGE",
        "MASK",
        "CONTROL_NET",
        "CLIP_VISION",
        "CLIP_VISION_OUTPUT",
        "STYLE_MODEL",
        "UPSCALE_MODEL",
        "GLIGEN",
        "SIGMAS",
        "NOISE",
        "SAMPLER",
        "GUIDER",
        "AUDIO",
        "VIDEO",
        "LORA_MODEL",
        "LATENT_OPERATION",
    }
)


def shown(value: Any, limit: int = SHOWN_CHARS) -> Any:
    """`value` for an error report: unchanged when short, else its text cut to `limit` with a count."""
    if value is None or isinstance(value, (bool, int, float)) and len(repr(value)) <= limit:
        return value
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return value
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def utf8_safe(text: str) -> bool:
    """False for strings holding unpaired surrogates, which no file, socket or database can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
        if not utf8_safe(node_id) or (isinstance(raw, Mapping) and not utf8_safe(str(raw.get("class_type")))):
            problems[shown(node_id.encode("utf-8", "backslashreplace").decode(), 100)] = {
                "errors": [
                    error(
                        "invalid_prompt",
                        "Node id or class_type is not Unicode text",
                        "node ids and class_type must not hold unpaired surrogates (\\ud800-\\udfff)",
                    )
                ],
                "dependent_outputs": [],
                "class_type": None,
            }
            continue
        if not isinstance(raw, Mapping) or not isinstance(raw.get("class_type"), str):
            problems[shown(node_id, 100)] = {
                "errors": [
                    error(
                        "invalid_prompt",
                        "Node has no class_type",
                        f"node {shown(node_id, 100)} must be an object with a 'class_type' string",
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
    coerced = _COERCE[spec.type](value)
    if spec.type == FLOAT and not math.isfinite(coerced):
        raise ValueError("not a finite number (NaN and infinities are refused)")
    if spec.type == STRING and not utf8_safe(coerced):
        raise ValueError("not Unicode text (it holds unpaired surrogates)")
    return coerced


def _check_literal(spec: Input, value: Any, self_validated: bool) -> tuple[Any, dict[str, Any] | None]:
    """Coerce a literal and check range / choices. Returns (value, error or None)."""
    name = spec.name
    config = {"input_name": name, "received_value": shown(value)}
    if spec.type in _COERCE:
        try:
            value = _coerce(spec, value)
        except (TypeError, ValueError, OverflowError) as exc:
            return value, error(
                "invalid_input_type",
                f"Failed to convert an input value to a {spec.type} value",
                f"{name}, {shown(repr(value))}, {shown(str(exc))}",
                **config,
            )
        if self_validated or spec.type not in (INT, FLOAT):
            return value, None
        if spec.min is not None and value < spec.min:
            return value, error(
                "value_smaller_than_min",
                f"Value {shown(value)} smaller than min of {spec.min}",
                f"{name}",
                **config,
            )
        if spec.max is not None and value > spec.max:
            return value, error(
                "value_bigger_than_max",
                f"Value {shown(value)} bigger than max of {spec.max}",
                f"{name}",
                **config,
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
            listed = list(options) if len(options) <= 20 else None
            preview = list(options[:20]) + (["..."] if len(options) > 20 else [])
            return value, error(
                "value_not_in_list",
                "Value not in list",
                f"{name}: '{shown(str(value))}' not in {preview}",
                input_config=listed,
                **config,
            )
    return value, None


def _link_only(type_name: str) -> bool:
    parts = [t.strip() for t in type_name.split(",")]
    return all(t in LINK_ONLY_TYPES for t in parts)


def _undeclared_input_errors(
    node: PromptNode, schema: Schema, nodes: Mapping[str, PromptNode], schemas: Mapping[str, Schema]
) -> list[dict[str, Any]]:
    """Inputs the node does not declare: refused when their key is not Unicode text or they link to a
    node that is not in the prompt (or to an output it does not have); otherwise left alone."""
    declared = {s.name for s in schema.inputs} | {h.name for h in schema.hidden}
    errors: list[dict[str, Any]] = []
    for name, value in node.inputs.items():
        if name in declared:
            continue
        if not utf8_safe(name):
            safe_name = name.encode("utf-8", "backslashreplace").decode()
            errors.append(
                error(
                    "invalid_input_name",
                    "Input name is not Unicode text",
                    f"{shown(safe_name, 100)}: input names must not hold unpaired surrogates",
                    input_name=shown(safe_name, 100),
                )
            )
            continue
        if type(value) is not Link:
            continue
        source_schema = schemas.get(value.node_id)
        if value.node_id not in nodes or source_schema is None:
            errors.append(
                error(
                    "bad_linked_input",
                    "Linked node not found",
                    f"{shown(name, 100)} is linked to node {shown(value.node_id, 100)}, which is not in the prompt",
                    input_name=shown(name, 100),
                    received_value=[shown(value.node_id, 100), value.slot],
                )
            )
        elif not 0 <= value.slot < len(source_schema.outputs):
            errors.append(
                error(
                    "bad_linked_input",
                    "Bad linked input, output index out of range",
                    f"{shown(name, 100)} is linked to output {value.slot} of node {value.node_id}, "
                    f"which has {len(source_schema.outputs)} outputs",
                    input_name=shown(name, 100),
                    received_value=list(value),
                )
            )
    return errors


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
                        f"{name} is linked to node {shown(value.node_id, 100)}, which is not in the prompt",
                        input_name=name,
                        received_value=[shown(value.node_id, 100), value.slot],
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
                    received_value=shown(value),
                )
            )
            continue
        if value is not None and _link_only(spec.type):
            errors.append(
                error(
                    "invalid_input_type",
                    f"Failed to convert an input value to a {spec.type} value",
                    f"{name}: a {spec.type} input takes a link [node_id, output_index], "
                    f"got the literal {shown(repr(value))}",
                    input_name=name,
                    received_value=shown(value),
                )
            )
            continue
        coerced, problem = _check_literal(spec, value, self_checked is None or name in self_checked)
        inputs[name] = coerced
        if problem:
            errors.append(problem)
    errors.extend(_undeclared_input_errors(node, schema, nodes, schemas))
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


def _cycle_errors(involved: Iterable[str], nodes: Mapping[str, PromptNode]) -> dict[str, dict[str, Any]]:
    """One `dependency_cycle` error per cycle, on its first member, naming the members once."""
    out: dict[str, dict[str, Any]] = {}
    for component in components(involved, nodes):
        if not is_cycle(component, nodes):
            continue
        members = sorted(component)
        named = [shown(m, 100) for m in members[:CYCLE_NAMES_LIMIT]]
        rest = len(members) - len(named)
        listing = ", ".join(named) + (f" and {rest} more" if rest else "")
        out[members[0]] = error(
            "dependency_cycle",
            "Dependency cycle detected",
            f"{len(members)} nodes depend on each other: {listing}",
            cycle_nodes=named,
            cycle_size=len(members),
        )
    return out


def _dependent_outputs(
    outputs: list[str], involved: list[str], nodes: Mapping[str, PromptNode]
) -> dict[str, list[str]]:
    """For every involved node, the outputs that depend on it (at most DEPENDENT_OUTPUTS_LIMIT each).

    Computed once over the condensed graph, users before their sources, so the work stays linear.
    """
    members = set(involved)
    comps = components(involved, nodes)
    comp_of = {n: i for i, comp in enumerate(comps) for n in comp}
    users: dict[int, set[int]] = {i: set() for i in range(len(comps))}
    for node_id in involved:
        for source in nodes[node_id].sources & members:
            if comp_of[source] != comp_of[node_id]:
                users[comp_of[source]].add(comp_of[node_id])
    output_set = set(outputs)
    found: dict[int, list[str]] = {}
    for index in range(len(comps) - 1, -1, -1):  # every component after the ones it depends on
        own = sorted(n for n in comps[index] if n in output_set)
        merged: list[str] = own[:DEPENDENT_OUTPUTS_LIMIT]
        seen = set(merged)
        for user in users[index]:
            for output in found[user]:
                if len(merged) >= DEPENDENT_OUTPUTS_LIMIT:
                    break
                if output not in seen:
                    seen.add(output)
                    merged.append(output)
        found[index] = merged
    order = {o: i for i, o in enumerate(outputs)}
    return {n: sorted(found[comp_of[n]], key=order.__getitem__) for n in involved}


def validate_prompt(
    prompt: Any, registry: NodeRegistry, *, services: Any = None, targets: Iterable[str] | None = None
) -> ValidatedPrompt:
    """Validate everything before running. Raises PromptValidationError when no output can run."""
    nodes = parse_prompt(prompt)
    missing = {nid: n.class_type for nid, n in nodes.items() if n.class_type not in registry}
    if missing:
        names = sorted({shown(ct, 100) for ct in missing.values()})
        first_id, first_type = next(iter(missing.items()))
        raise PromptValidationError(
            error(
                "missing_node_type",
                f"Cannot execute because node types {names[:CYCLE_NAMES_LIMIT]} do not exist."
                + (f" ({len(names)} in all)" if len(names) > CYCLE_NAMES_LIMIT else ""),
                "; ".join(f"node {shown(nid, 100)}: {shown(ct, 100)}" for nid, ct in missing.items()),
                node_id=shown(first_id, 100),
                class_type=shown(first_type, 100),
                node_title=shown(nodes[first_id].title or first_type, 100),
            ),
            {
                shown(nid, 100): {
                    "errors": [
                        error(
                            "missing_node_type",
                            f"Node type '{shown(ct, 100)}' does not exist",
                            shown(ct, 100),
                        )
                    ],
                    "dependent_outputs": [],
                    "class_type": shown(ct, 100),
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
    if blocked:
        for node_id, cycle_error in _cycle_errors(blocked, nodes).items():
            own_errors.setdefault(node_id, []).append(cycle_error)

    bad = set(own_errors) | set(blocked)
    for node_id in ordered:  # upstream errors make downstream nodes invalid, without reasons of their own
        if not nodes[node_id].sources.isdisjoint(bad):
            bad.add(node_id)
    good_outputs = tuple(o for o in outputs if o not in bad)

    node_errors: dict[str, Any] = {}
    if own_errors:
        dependents = _dependent_outputs(outputs, involved, nodes)
        for node_id in involved:
            if node_id in own_errors:
                node_errors[node_id] = {
                    "errors": own_errors[node_id],
                    "dependent_outputs": dependents[node_id],
                    "class_type": nodes[node_id].class_type,
                }
    if not good_outputs:
        details = "\n".join(f"{e['message']}: {e['details']}" for errs in own_errors.values() for e in errs)
        raise PromptValidationError(
            error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
            node_errors,
        )
    return ValidatedPrompt(nodes, good_outputs, node_errors, tuple(ordered))
