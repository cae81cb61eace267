"""Validate API-format prompts, collecting every error per node in ComfyUI's shape."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import PromptValidationError
from .input_checks import check_node_inputs
from .order import components, dependency_closure, is_cycle, topological_order
from .prompt_nodes import PromptNode, error, parse_prompt, shown
from .registry import NodeRegistry
from .schema import Schema

# Reports stay linear in the prompt's size: a cycle names at most this many members (then a count),
# an error lists at most this many dependent outputs.
CYCLE_NAMES_LIMIT = 20
DEPENDENT_OUTPUTS_LIMIT = 100


@dataclass
class ValidatedPrompt:
    nodes: dict[str, PromptNode]
    outputs: tuple[str, ...]
    node_errors: dict[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = ()  # dependency order of every node the outputs need
    # Filled by the first run when no node has a fingerprint: a re-run of the same prompt reuses them.
    signatures: dict[str, str] | None = None
    # Filled by the first re-check (still_valid): the registry does not change while the server runs.
    volatile: tuple[str, ...] | None = None


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
    volatile = validated.volatile
    if volatile is None:
        volatile = validated.volatile = tuple(volatile_nodes(validated, registry))
    if not volatile:
        return True
    if any(validated.nodes[n].class_type not in registry for n in volatile):
        return False
    nodes = validated.nodes
    schemas: dict[str, Schema] = {}
    for node_id in {s for n in volatile for s in nodes[n].sources} | set(volatile):
        schemas[node_id] = registry[nodes[node_id].class_type].describe(services)
    return not any(
        check_node_inputs(nodes[n], schemas[n], registry[nodes[n].class_type], nodes, schemas, services)
        for n in volatile
    )


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
    described: dict[str, Schema | None] = {}  # by class_type; None: not registered
    schemas: dict[str, Schema] = {}
    missing: dict[str, str] = {}
    for node_id, node in nodes.items():
        class_type = node.class_type
        if class_type in described:
            schema = described[class_type]
        else:
            node_type = registry.get(class_type)
            schema = described[class_type] = None if node_type is None else node_type.describe(services)
        if schema is None:
            missing[node_id] = class_type
        else:
            schemas[node_id] = schema
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
    outputs = [nid for nid, schema in schemas.items() if schema.is_output_node]
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
        errs = check_node_inputs(node, schemas[node_id], registry[node.class_type], nodes, schemas, services)
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
