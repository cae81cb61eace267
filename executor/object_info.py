"""`/object_info` JSON generated from schemas, in exactly ComfyUI's shape."""

from __future__ import annotations

import logging
from typing import Any

from .registry import NodeRegistry, NodeType
from .schema import BOOLEAN, COMBO, FLOAT, INT, STRING, Input, Schema

log = logging.getLogger(__name__)

_NUMBER_FIELDS = ("default", "min", "max", "step")


def input_spec(spec: Input) -> list[Any]:
    """One input as ComfyUI serialises it: `[type, {options}]` or `[[choices], {options}]`."""
    opts: dict[str, Any] = {}
    if spec.type in (INT, FLOAT):
        opts.update({k: getattr(spec, k) for k in _NUMBER_FIELDS if getattr(spec, k) is not None})
        if spec.type == FLOAT and spec.round is not None:
            opts["round"] = spec.round
        if spec.control_after_generate:
            opts["control_after_generate"] = True
    elif spec.type in (STRING, BOOLEAN) or spec.default is not None:
        if spec.default is not None:
            opts["default"] = spec.default
    if spec.type == STRING:
        if spec.multiline:
            opts["multiline"] = True
        if spec.dynamic_prompts is not None:
            opts["dynamicPrompts"] = spec.dynamic_prompts
    if spec.type == COMBO and spec.control_after_generate:
        opts["control_after_generate"] = True
    if spec.force_input:
        opts["forceInput"] = True
    if spec.lazy:
        opts["lazy"] = True
    if spec.raw_link:
        opts["rawLink"] = True
    if spec.tooltip:
        opts["tooltip"] = spec.tooltip
    opts.update(spec.extra)
    if spec.type == COMBO:
        choices = list(spec.options) if isinstance(spec.options, tuple) else []
        if spec.legacy_combo:
            return [choices, opts] if opts else [choices]
        return [COMBO, {"options": choices, **opts}]
    return [spec.type, opts] if opts else [spec.type]


def node_info(schema: Schema) -> dict[str, Any]:
    required = {i.name: input_spec(i) for i in schema.inputs if not i.optional}
    optional = {i.name: input_spec(i) for i in schema.inputs if i.optional}
    inputs: dict[str, Any] = {"required": required}
    order: dict[str, list[str]] = {"required": list(required)}
    if optional:
        inputs["optional"], order["optional"] = optional, list(optional)
    if schema.hidden:
        inputs["hidden"] = {h.name: h.kind for h in schema.hidden}
        order["hidden"] = [h.name for h in schema.hidden]
    info: dict[str, Any] = {
        "input": inputs,
        "input_order": order,
        "is_input_list": schema.is_input_list,
        "output": [o.type for o in schema.outputs],
        "output_is_list": [o.is_list for o in schema.outputs],
        "output_name": [o.label for o in schema.outputs],
        "output_tooltips": [o.tooltip or "" for o in schema.outputs],
        "name": schema.node_id,
        "display_name": schema.title,
        "description": schema.description,
        "python_module": schema.python_module,
        "category": schema.category,
        "output_node": schema.is_output_node,
        "has_intermediate_output": schema.has_intermediate_output,
        "search_aliases": list(schema.search_aliases),
    }
    if schema.deprecated:
        info["deprecated"] = True
    if schema.experimental:
        info["experimental"] = True
    return info


def node_type_info(node_type: NodeType, services: Any = None) -> dict[str, Any]:
    return node_info(node_type.describe(services))


def object_info(registry: NodeRegistry, services: Any = None) -> dict[str, Any]:
    """All node definitions; a node that fails to describe itself is skipped, as ComfyUI does."""
    out: dict[str, Any] = {}
    for node_type in registry:
        try:
            out[node_type.node_id] = node_type_info(node_type, services)
        except Exception:  # one broken pack node must not hide every other node
            log.exception("describing node %r failed", node_type.node_id)
    return out
