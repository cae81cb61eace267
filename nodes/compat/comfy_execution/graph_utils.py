"""ComfyUI's `comfy_execution.graph_utils`: build node expansions (`{"expand": graph.finalize()}`)."""

from __future__ import annotations

import itertools
from typing import Any

from ..missing import module_getattr

__getattr__ = module_getattr(__name__)

_prefixes = itertools.count()


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


class GraphNode:
    def __init__(self, node_id: str, class_type: str, inputs: dict[str, Any]) -> None:
        self.id = node_id
        self.class_type = class_type
        self.inputs = inputs
        self.override_display_id: str | None = None

    def out(self, index: int) -> list[Any]:
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        if value is None:
            self.inputs.pop(key, None)
        else:
            self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, override_display_id: str) -> None:
        self.override_display_id = override_display_id

    def serialize(self) -> dict[str, Any]:
        data: dict[str, Any] = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            data["override_display_id"] = self.override_display_id
        return data


class GraphBuilder:
    """Nodes added here get ids unique to this builder (`prefix` + counter)."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix if prefix is not None else f"{next(_prefixes)}."
        self.nodes: dict[str, GraphNode] = {}
        self.id_gen = 1

    def node(self, class_type: str, id: str | None = None, **kwargs: Any) -> GraphNode:
        if id is None:
            id = str(self.id_gen)
            self.id_gen += 1
        full = self.prefix + id
        if full in self.nodes:
            return self.nodes[full]
        node = GraphNode(full, class_type, dict(kwargs))
        self.nodes[full] = node
        return node

    def lookup_node(self, id: str) -> GraphNode | None:
        return self.nodes.get(self.prefix + id)

    def finalize(self) -> dict[str, Any]:
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}

    def remove_node(self, id: str) -> None:
        self.nodes.pop(self.prefix + id, None)
