"""Per-node input checks of validation: literals against their specs, links against socket types."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

from .prompt_nodes import Link, PromptNode, error, shown, utf8_safe
from .registry import NodeType
from .schema import ANY, BOOLEAN, COMBO, FLOAT, INT, STRING, Input, Schema

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
    if spec.type in _COERCE:
        try:
            value = _coerce(spec, value)
        except (TypeError, ValueError, OverflowError) as exc:
            config = {"input_name": name, "received_value": shown(value)}
            return value, error(
                "invalid_input_type",
                f"Failed to convert an input value to a {spec.type} value",
                f"{name}, {shown(repr(value))}, {shown(str(exc))}",
                **config,
            )
        if self_validated or spec.type not in (INT, FLOAT):
            return value, None
        config = {"input_name": name, "received_value": shown(value)}
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
            config = {"input_name": name, "received_value": shown(value)}
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


@functools.cache  # a handful of type names, asked once per literal input
def _link_only(type_name: str) -> bool:
    parts = [t.strip() for t in type_name.split(",")]
    return all(t in LINK_ONLY_TYPES for t in parts)


def _undeclared_input_errors(
    node: PromptNode, schema: Schema, nodes: Mapping[str, PromptNode], schemas: Mapping[str, Schema]
) -> list[dict[str, Any]]:
    """Inputs the node does not declare: refused when their key is not Unicode text or they link to a
    node that is not in the prompt (or to an output it does not have); otherwise left alone."""
    declared = schema.declared_names
    errors: list[dict[str, Any]] = []
    if declared.issuperset(node.inputs):
        return errors
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


def check_node_inputs(
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
