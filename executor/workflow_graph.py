"""The UI-format (LiteGraph) workflow as a graph: nodes, links, subgraph scopes and link resolution.

`executor.workflow` turns this into an API prompt. Resolution follows what the official frontend does
when it queues a graph: muted nodes give nothing, bypassed nodes pass an input of a matching type
through, Reroutes are followed, PrimitiveNodes push their value, and links that cross a subgraph
boundary are followed through the instance's inputs and outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

MODE_MUTED, MODE_BYPASS = 2, 4
SUBGRAPH_INPUT_NODE, SUBGRAPH_OUTPUT_NODE = "-10", "-20"
REROUTE, PRIMITIVE = "Reroute", "PrimitiveNode"
# Frontend-only node types: never sent to the server.
VIRTUAL_TYPES = frozenset({REROUTE, PRIMITIVE, "Note", "MarkdownNote"})


class WorkflowFormatError(ValueError):
    """A UI workflow is malformed: `where` names the node or link, `message` what is wrong.

    `node_id` (an execution id such as `12:5`) and `class_type` are set when one node is at fault.
    """

    def __init__(
        self, where: str, message: str, *, node_id: str | None = None, class_type: str | None = None
    ) -> None:
        self.where = where
        self.message = message
        self.node_id = node_id
        self.class_type = class_type
        super().__init__(f"{where}: {message}")


class UiLink(NamedTuple):
    link_id: str
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: str


@dataclass(frozen=True)
class UiNode:
    """One serialised node. `inputs`/`outputs` are the serialised slot dicts, in their order."""

    node_id: str
    type: str
    mode: int
    title: str | None
    inputs: tuple[Mapping[str, Any], ...]
    outputs: tuple[Mapping[str, Any], ...]
    widgets_values: Any
    widgets_values_named: Mapping[str, Any] | None
    properties: Mapping[str, Any]

    def input_index(self, name: str) -> int | None:
        for i, slot in enumerate(self.inputs):
            if slot.get("name") == name:
                return i
        return None


@dataclass(frozen=True)
class UiGraph:
    """A root graph or a subgraph definition body."""

    nodes: dict[str, UiNode]
    links: dict[str, UiLink]
    # Only for subgraph definitions: the definition's input/output slots (name, type, ...).
    inputs: tuple[Mapping[str, Any], ...] = ()
    outputs: tuple[Mapping[str, Any], ...] = ()
    name: str = ""


def _id(value: Any) -> str:
    """Node and link ids arrive as ints or strings; `12` and `"12"` are the same node."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _parse_link(raw: Any, where: str) -> UiLink:
    try:
        if isinstance(raw, Mapping):  # schema version 1
            return UiLink(
                _id(raw["id"]),
                _id(raw["origin_id"]),
                int(raw["origin_slot"]),
                _id(raw["target_id"]),
                int(raw["target_slot"]),
                str(raw.get("type", "*")),
            )
        link_id, origin, origin_slot, target, target_slot, *rest = raw  # version 0.4 arrays
        return UiLink(
            _id(link_id),
            _id(origin),
            int(origin_slot),
            _id(target),
            int(target_slot),
            str(rest[0]) if rest else "*",
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise WorkflowFormatError(where, f"malformed link {raw!r} ({exc})") from None


def _parse_node(raw: Any, where: str) -> UiNode:
    if not isinstance(raw, Mapping) or "id" not in raw or not isinstance(raw.get("type"), str):
        raise WorkflowFormatError(where, f"a node needs an 'id' and a 'type' string, got {str(raw)[:120]}")
    named = raw.get("widgets_values_named")
    mode = raw.get("mode", 0)
    properties = raw.get("properties")
    return UiNode(
        node_id=_id(raw["id"]),
        type=raw["type"],
        mode=mode if isinstance(mode, int) else 0,
        title=raw.get("title") if isinstance(raw.get("title"), str) else None,
        inputs=tuple(s for s in raw.get("inputs") or () if isinstance(s, Mapping)),
        outputs=tuple(s for s in raw.get("outputs") or () if isinstance(s, Mapping)),
        widgets_values=raw.get("widgets_values"),
        widgets_values_named=named if isinstance(named, Mapping) else None,
        properties=properties if isinstance(properties, Mapping) else {},
    )


def parse_graph(raw: Mapping[str, Any], where: str) -> UiGraph:
    """Nodes and links of a root workflow or a subgraph definition (0.4 arrays or 1.0 objects)."""
    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, list):
        raise WorkflowFormatError(where, "'nodes' must be a list")
    nodes: dict[str, UiNode] = {}
    for i, item in enumerate(nodes_raw):
        node = _parse_node(item, f"{where} node #{i}")
        nodes[node.node_id] = node
    links: dict[str, UiLink] = {}
    for item in raw.get("links") or ():
        if item is None:  # old files may hold nulls for deleted links
            continue
        link = _parse_link(item, where)
        links[link.link_id] = link
    return UiGraph(
        nodes,
        links,
        inputs=tuple(s for s in raw.get("inputs") or () if isinstance(s, Mapping)),
        outputs=tuple(s for s in raw.get("outputs") or () if isinstance(s, Mapping)),
        name=str(raw.get("name", "")),
    )


def collect_subgraphs(raw: Mapping[str, Any], into: dict[str, UiGraph] | None = None) -> dict[str, UiGraph]:
    """Every definition in `definitions.subgraphs`, including definitions nested inside definitions."""
    out = {} if into is None else into
    definitions = raw.get("definitions")
    subgraphs = definitions.get("subgraphs") if isinstance(definitions, Mapping) else None
    for item in subgraphs or ():
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            raise WorkflowFormatError(
                "definitions.subgraphs", f"a subgraph needs an 'id', got {str(item)[:120]}"
            )
        out[item["id"]] = parse_graph(item, f"subgraph {item.get('name') or item['id']!r}")
        collect_subgraphs(item, out)
    return out


def types_connect(a: Any, b: Any) -> bool:
    """LiteGraph's connection rule: `*`/empty match anything; comma lists match when they share a type."""
    if a in ("", "*", 0, None) or b in ("", "*", 0, None) or a == b:
        return True
    left, right = str(a).lower().split(","), str(b).lower().split(",")
    return any(x == y or x in ("", "*") or y in ("", "*") for x in left for y in right)


class Value(NamedTuple):
    """An input that resolved to a literal (a PrimitiveNode or a subgraph-level widget value)."""

    value: Any


class Source(NamedTuple):
    """An input that resolved to output `slot` of the emitted node `exec_id`."""

    exec_id: str
    slot: int


@dataclass
class Scope:
    """A graph as instantiated at one place: the root, or one subgraph instance (nested or not).

    `overrides[(inner_node_id, widget_name)]` are widget values set from outside (promoted widgets);
    `input_values[name]` are values of the instance's own widget inputs (used when unconnected).
    """

    graph: UiGraph
    path: tuple[str, ...] = ()
    parent: Scope | None = None
    instance: UiNode | None = None
    overrides: dict[tuple[str, str], Any] = field(default_factory=dict)
    input_values: dict[str, Any] = field(default_factory=dict)

    def exec_id(self, node_id: str) -> str:
        return ":".join((*self.path, node_id))

    def error(self, node: UiNode, message: str) -> WorkflowFormatError:
        exec_id = self.exec_id(node.node_id)
        return WorkflowFormatError(
            f"node {exec_id} ({node.type})", message, node_id=exec_id, class_type=node.type
        )


class Resolver:
    """Resolves node inputs to emitted sources, following the frontend's rules."""

    def __init__(self, subgraphs: Mapping[str, UiGraph]) -> None:
        self.subgraphs = subgraphs
        self._children: dict[tuple[tuple[str, ...], str], Scope] = {}

    # -- scopes -------------------------------------------------------------------------------------
    def child(self, scope: Scope, instance: UiNode) -> Scope:
        """The scope of subgraph instance `instance` placed in `scope` (memoised)."""
        key = (scope.path, instance.node_id)
        found = self._children.get(key)
        if found is None:
            graph = self.subgraphs[instance.type]
            found = Scope(graph, (*scope.path, instance.node_id), scope, instance)
            self._fill_instance_values(scope, instance, found)
            self._children[key] = found
        return found

    def _fill_instance_values(self, scope: Scope, instance: UiNode, child: Scope) -> None:
        graph = child.graph
        values = instance.widgets_values if isinstance(instance.widgets_values, list) else []
        proxies = instance.properties.get("proxyWidgets")
        if isinstance(proxies, list) and proxies:
            # Promoted widgets: entry i of widgets_values belongs to proxyWidgets[i]; a hole keeps
            # the inner widget's own value.
            for i, entry in enumerate(proxies):
                if isinstance(entry, (list, tuple)) and len(entry) >= 2 and i < len(values):
                    if values[i] is not None:
                        child.overrides[(_id(entry[0]), str(entry[1]))] = values[i]
        else:
            promoted = [s.get("name") for k, s in enumerate(graph.inputs) if self._is_widget_input(graph, k)]
            for name, value in zip(promoted, values):
                child.input_values[str(name)] = value
        if instance.widgets_values_named:
            names = {str(s.get("name")) for s in graph.inputs}
            child.input_values.update({k: v for k, v in instance.widgets_values_named.items() if k in names})
        for (node_id, name), value in scope.overrides.items():
            if node_id == instance.node_id:
                child.input_values[name] = value

    @staticmethod
    def _is_widget_input(graph: UiGraph, index: int) -> bool:
        """A subgraph input carries a widget when it feeds a widget input inside."""
        for link in graph.links.values():
            if link.origin_id == SUBGRAPH_INPUT_NODE and link.origin_slot == index:
                target = graph.nodes.get(link.target_id)
                for slot in target.inputs if target else ():
                    if _id(slot.get("link")) == link.link_id and slot.get("widget"):
                        return True
        return False

    # -- resolution ---------------------------------------------------------------------------------
    def resolve_input(
        self, scope: Scope, node: UiNode, index: int, want: Any = None, seen: set | None = None
    ) -> Value | Source | None:
        """What input `index` of `node` receives; None when nothing (unconnected, muted source, ...)."""
        seen = set() if seen is None else seen
        key = (scope.path, node.node_id, "in", index)
        if key in seen:
            raise scope.error(node, f"links loop back through input {index}")
        seen.add(key)
        slot = node.inputs[index]
        raw_link = slot.get("link")
        if raw_link is None:
            return None
        link = scope.graph.links.get(_id(raw_link))
        if link is None:
            raise scope.error(node, f"input {slot.get('name')!r} uses link {raw_link}, which does not exist")
        want = want if want is not None else slot.get("type", "*")
        if link.origin_id == SUBGRAPH_INPUT_NODE:
            return self._from_subgraph_input(scope, node, link, want, seen)
        origin = scope.graph.nodes.get(link.origin_id)
        if origin is None:
            raise scope.error(
                node, f"link {link.link_id} starts at node {link.origin_id}, which does not exist"
            )
        return self.resolve_output(scope, origin, link.origin_slot, want, seen)

    def _from_subgraph_input(
        self, scope: Scope, node: UiNode, link: UiLink, want: Any, seen: set
    ) -> Value | Source | None:
        instance, parent = scope.instance, scope.parent
        if instance is None or parent is None:
            raise scope.error(node, "link from a subgraph input outside a subgraph")
        if not 0 <= link.origin_slot < len(scope.graph.inputs):
            raise scope.error(
                node,
                f"link {link.link_id} starts at subgraph input {link.origin_slot}, "
                f"but subgraph {scope.graph.name!r} has {len(scope.graph.inputs)} inputs",
            )
        name = str(scope.graph.inputs[link.origin_slot].get("name"))
        # Serialised instances drop unconnected widget inputs, so slots are matched by name.
        outer = instance.input_index(name)
        if outer is None or instance.inputs[outer].get("link") is None:
            return Value(scope.input_values[name]) if name in scope.input_values else None
        return self.resolve_input(parent, instance, outer, want, seen)

    def resolve_output(
        self, scope: Scope, node: UiNode, slot: int, want: Any, seen: set
    ) -> Value | Source | None:
        key = (scope.path, node.node_id, "out", slot)
        if key in seen:
            raise scope.error(node, f"links loop back through output {slot}")
        seen.add(key)
        if node.type == PRIMITIVE:
            # The frontend copies a PrimitiveNode's value into its targets whatever its mode.
            return Value(self.widget_value(scope, node, "value", 0))
        if node.mode == MODE_MUTED:
            return None
        if node.mode == MODE_BYPASS:
            index = self._bypass_index(node, slot, want)
            return None if index < 0 else self.resolve_input(scope, node, index, want, seen)
        if node.type in self.subgraphs:
            return self._from_subgraph_output(scope, node, slot, want, seen)
        if node.type == REROUTE:
            return self.resolve_input(scope, node, 0, want, seen) if node.inputs else None
        if node.type in VIRTUAL_TYPES:
            return None
        return Source(scope.exec_id(node.node_id), slot)

    def _from_subgraph_output(
        self, scope: Scope, node: UiNode, slot: int, want: Any, seen: set
    ) -> Value | Source | None:
        child = self.child(scope, node)
        inner = next(
            (
                lk
                for lk in child.graph.links.values()
                if lk.target_id == SUBGRAPH_OUTPUT_NODE and lk.target_slot == slot
            ),
            None,
        )
        if inner is None:
            return None
        if inner.origin_id == SUBGRAPH_INPUT_NODE:  # an input wired straight to an output
            return self._from_subgraph_input(child, node, inner, want, seen)
        origin = child.graph.nodes.get(inner.origin_id)
        if origin is None:
            raise scope.error(
                node, f"subgraph output {slot} comes from node {inner.origin_id}, which does not exist"
            )
        return self.resolve_output(child, origin, inner.origin_slot, want, seen)

    @staticmethod
    def _bypass_index(node: UiNode, slot: int, want: Any) -> int:
        """Which input a bypassed node passes through to output `slot` (the frontend's order of preference)."""
        inputs = node.inputs
        if want in ("*", ""):
            return slot if len(inputs) > slot else (0 if inputs else -1)
        out_type = node.outputs[slot].get("type", "*") if slot < len(node.outputs) else "*"
        if slot < len(inputs):
            same = inputs[slot].get("type", "*")
            if types_connect(same, out_type) and types_connect(same, want):
                return slot
        for i, item in enumerate(inputs):
            if item.get("type") == want:
                return i
        for i, item in enumerate(inputs):
            kind = item.get("type", "*")
            if types_connect(kind, out_type) and types_connect(kind, want):
                return i
        return -1

    # -- widget values ------------------------------------------------------------------------------
    @staticmethod
    def widget_value(scope: Scope, node: UiNode, name: str, index: int) -> Any:
        """A widget's value: an override from outside the subgraph, else named, else positional."""
        if (node.node_id, name) in scope.overrides:
            return scope.overrides[(node.node_id, name)]
        if node.widgets_values_named and name in node.widgets_values_named:
            return node.widgets_values_named[name]
        values = node.widgets_values
        if isinstance(values, Mapping):
            return values.get(name)
        if isinstance(values, list) and index < len(values):
            return values[index]
        return None
