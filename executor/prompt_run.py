"""One prompt's run: scheduling in dependency order, cache reuse, lazy inputs, list mapping, expansion."""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import events as ev
from .cache import OutputCache, compute_signatures
from .cancel import CancelToken
from .errors import Interrupted, NodeExecutionError
from .graph import ValidatedPrompt
from .hooks import NodeHooks
from .messages import exception_type_name, format_value
from .order import dependency_closure, topological_order
from .prompt_nodes import Link, PromptNode, parse_prompt, to_link
from .registry import NodeRegistry, NodeType
from .schema import NodeContext, NodeOutput


@dataclass
class RunResult:
    """What a run produced: UI outputs by node id, the nodes that ran and those taken from the cache."""

    prompt_id: str
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # node id -> UI output
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)


class PromptRun:
    """State of one prompt's execution."""

    def __init__(
        self,
        validated: ValidatedPrompt,
        *,
        registry: NodeRegistry,
        cache: OutputCache,
        hooks: NodeHooks,
        services: Any,
        prompt_id: str,
        sink: ev.EventSink,
        extra_data: Mapping[str, Any],
        cancel: CancelToken,
        raw_prompt: Mapping[str, Any],
    ) -> None:
        self.registry = registry
        self.cache = cache
        self.hooks = hooks
        self.services = services
        self.nodes: dict[str, PromptNode] = dict(validated.nodes)
        self.validated = validated
        self.outputs = validated.outputs
        self.order = validated.order or tuple(dependency_closure(validated.outputs, validated.nodes))
        self.prompt_id = prompt_id
        self.sink = sink
        self.extra_data = extra_data
        self.cancel = cancel
        self.raw_prompt = raw_prompt
        self.result = RunResult(prompt_id)
        self.values: dict[str, tuple[list[Any], ...]] = {}
        self.signatures: dict[str, str] = {}
        self.blockers: dict[str, set[str]] = {}
        self.users: dict[str, set[str]] = {}
        self.scheduled: set[str] = set()
        self.ready: list[str] = []
        self.expanding: dict[str, list[NodeOutput]] = {}
        self.display: dict[str, str] = {}  # expanded node -> node shown in the UI
        self.types: dict[str, NodeType] = {}

    # --- setup ---------------------------------------------------------------------------------
    def _type(self, node_id: str) -> NodeType:
        node_type = self.types.get(node_id)
        if node_type is None:  # looked up once per node: the run asks several times per node
            node_type = self.types[node_id] = self.registry[self.nodes[node_id].class_type]
        return node_type

    def _fingerprint(self, node_id: str) -> Any:
        node_type = self._type(node_id)
        if node_type.fingerprint is None:
            return None
        literals = {k: (None if isinstance(v, Link) else v) for k, v in self.nodes[node_id].inputs.items()}
        try:
            return node_type.fingerprint(literals, self.services)
        except Exception:  # ComfyUI treats a failing IS_CHANGED as "changed"
            return float("nan")

    def _sign(self, node_ids: Iterable[str], ordered: bool = False) -> None:
        """Signatures for nodes not signed yet (`ordered`: already in dependency order)."""
        ids = [n for n in node_ids if n not in self.signatures]
        if not ordered:
            ids, _ = topological_order(ids, self.nodes)
        types = {self.nodes[n].class_type: self.registry[self.nodes[n].class_type] for n in ids}
        fingerprints = {n: self._fingerprint(n) for n in ids if types[self.nodes[n].class_type].fingerprint}
        compute_signatures(ids, self.nodes, types, fingerprints, into=self.signatures)

    # --- scheduling ----------------------------------------------------------------------------
    def _schedule(self, root: str, user: str | None = None) -> None:
        """Make `root` (and what it needs) run before `user`; cached nodes need nothing."""
        if user is not None and root not in self.values:
            self.blockers.setdefault(user, set()).add(root)
            self.users.setdefault(root, set()).add(user)
        stack = [root]
        while stack:
            node_id = stack.pop()
            if node_id in self.scheduled:
                continue
            self.scheduled.add(node_id)
            if self._from_cache(node_id):
                self._done(node_id)
                continue
            lazy = self._type(node_id).schema.lazy_inputs
            for name, link in self.nodes[node_id].links():
                if name in lazy or link.node_id in self.values:
                    continue
                self.blockers.setdefault(node_id, set()).add(link.node_id)
                self.users.setdefault(link.node_id, set()).add(node_id)
                stack.append(link.node_id)
            if not self.blockers.get(node_id):
                self.ready.append(node_id)

    def _from_cache(self, node_id: str) -> bool:
        entry = self.cache.get(self.signatures[node_id])
        if entry is None:
            return False
        self.values[node_id] = entry.outputs
        self.result.cached.append(node_id)
        if entry.ui:
            self.result.outputs[node_id] = dict(entry.ui)
        return True

    def _done(self, node_id: str) -> None:
        for user in self.users.pop(node_id, ()):
            waiting = self.blockers[user]
            waiting.discard(node_id)
            if not waiting:
                self.ready.append(user)

    # --- main loop -----------------------------------------------------------------------------
    def run(self) -> RunResult:
        self.sink.emit(ev.ExecutionStart(self.prompt_id))
        if self.validated.signatures is not None:
            self.signatures.update(self.validated.signatures)
        else:
            self._sign(self.order, ordered=True)
            if not any(self._type(n).fingerprint for n in self.order):
                self.validated.signatures = dict(self.signatures)
        for output in reversed(self.outputs):
            self._schedule(output)
        cached = tuple(self.result.cached)
        self.sink.emit(ev.ExecutionCached(self.prompt_id, cached))
        for node_id in cached:
            if node_id in self.result.outputs:
                self.sink.emit(ev.Executed(self.prompt_id, node_id, self.result.outputs[node_id], node_id))
        current: str | None = None
        try:
            while self.ready:
                if self.cancel.is_cancelled():
                    raise Interrupted("interrupted between nodes")
                current = self.ready.pop()
                self._step(current)
        except Interrupted:
            node_type = self.nodes[current].class_type if current else None
            self.sink.emit(ev.ExecutionInterrupted(self.prompt_id, current, node_type, self._executed()))
            raise
        self.sink.emit(ev.ExecutionSuccess(self.prompt_id))
        return self.result

    def _executed(self) -> tuple[str, ...]:
        return tuple(self.result.ran + self.result.cached)

    def _step(self, node_id: str) -> None:
        if node_id in self.expanding:
            self._finish_expansion(node_id)
            return
        if self._pull_lazy(node_id):
            return
        if self._from_cache(node_id):  # an identical node earlier in this prompt produced it already
            self._done(node_id)
            return
        node_type = self._type(node_id)
        inputs = self._inputs(node_id, node_type)
        self.sink.emit(ev.Executing(self.prompt_id, node_id, self.display.get(node_id, node_id)))
        try:
            with self.hooks.around_node(node_id, node_type.node_id):
                calls = self._map_over_list(node_id, node_type, inputs)
        except Interrupted:
            raise
        except Exception as exc:
            if self.cancel.is_cancelled():
                raise Interrupted(f"interrupted in node {node_id}") from exc
            self._fail(node_id, node_type, inputs, exc)
        self.result.ran.append(node_id)
        for call in calls:
            if call.expand:
                self._expand(node_id, calls)
                return
        self._store(node_id, node_type, calls)

    def _fail(self, node_id: str, node_type: NodeType, inputs: dict[str, list[Any]], exc: Exception) -> None:
        formatted = {k: format_value(v[0] if len(v) == 1 else v) for k, v in inputs.items()}
        trace = traceback.format_exception(exc)
        self.sink.emit(
            ev.ExecutionError(
                self.prompt_id,
                node_id,
                node_type.node_id,
                exception_type_name(exc),
                str(exc),
                tuple(trace),
                formatted,
                tuple(self.values),
                self._executed(),
            )
        )
        raise NodeExecutionError(
            node_id,
            node_type.node_id,
            inputs=formatted,
            exception_type=exception_type_name(exc),
            exception_message=str(exc),
            traceback=trace,
        ) from exc

    def _pull_lazy(self, node_id: str) -> bool:
        """Ask the node which lazy inputs it needs; schedule missing ones. True if it must wait."""
        node_type = self._type(node_id)
        lazy = node_type.schema.lazy_inputs
        if not lazy or node_type.check_lazy_status is None:
            return False
        available = {k: (v[0] if len(v) == 1 else v) for k, v in self._inputs(node_id, node_type).items()}
        try:
            needed = node_type.check_lazy_status(available)
        except Exception as exc:
            self._fail(node_id, node_type, self._inputs(node_id, node_type), exc)
        node = self.nodes[node_id]
        waiting = False
        for name in needed or ():
            link = node.inputs.get(name)
            if name in lazy and isinstance(link, Link) and link.node_id not in self.values:
                self._schedule(link.node_id, user=node_id)
                waiting = waiting or link.node_id not in self.values
        if waiting:
            self.ready[:] = [n for n in self.ready if n != node_id]
        return waiting

    def _inputs(self, node_id: str, node_type: NodeType) -> dict[str, list[Any]]:
        """Each input as a list of values; unevaluated lazy inputs are [None]."""
        node = self.nodes[node_id]
        out: dict[str, list[Any]] = {}
        for spec in node_type.schema.inputs:
            if spec.name not in node.inputs:
                continue
            value = node.inputs[spec.name]
            if isinstance(value, Link):
                if spec.raw_link:
                    out[spec.name] = [list(value)]
                else:
                    produced = self.values.get(value.node_id)
                    out[spec.name] = produced[value.slot] if produced is not None else [None]
            else:
                out[spec.name] = [value]
        for hidden in node_type.schema.hidden:
            out[hidden.name] = [self._hidden_value(hidden.kind, node_id)]
        return out

    def _hidden_value(self, kind: str, node_id: str) -> Any:
        if kind == "PROMPT":
            return self.raw_prompt
        if kind == "EXTRA_PNGINFO":
            return self.extra_data.get("extra_pnginfo")
        if kind == "UNIQUE_ID":
            return node_id
        return None

    def _map_over_list(
        self, node_id: str, node_type: NodeType, inputs: dict[str, list[Any]]
    ) -> list[NodeOutput]:
        """ComfyUI's list semantics: one call per element, shorter lists repeat their last value."""

        def progress(value: float, maximum: float, preview: bytes | None = None) -> None:
            self.sink.emit(ev.Progress(self.prompt_id, node_id, value, maximum, preview))

        ctx = NodeContext(
            node_id,
            self.prompt_id,
            self.services,
            progress=progress,
            should_stop=self.cancel.is_cancelled,
        )
        if node_type.schema.is_input_list:
            return [node_type.invoke(ctx, inputs)]
        lengths = {len(v) for v in inputs.values()}
        if lengths <= {1}:  # the common case: one value per input, one call
            return [node_type.invoke(ctx, {k: v[0] for k, v in inputs.items()})]
        if 0 in lengths:
            return []  # an upstream list output was empty: nothing to map over
        count = max(lengths)
        return [
            node_type.invoke(ctx, {k: v[i] if i < len(v) else v[-1] for k, v in inputs.items()})
            for i in range(count)
        ]

    def _store(self, node_id: str, node_type: NodeType, calls: list[NodeOutput]) -> None:
        slots = node_type.schema.outputs
        if len(calls) == 1 and len(calls[0].values) == len(slots):  # one call: nothing to merge
            call = calls[0]
            outputs = tuple(list(v) if s.is_list else [v] for s, v in zip(slots, call.values))
            self._keep(node_id, outputs, _merge_ui((call.ui,)) if call.ui else None)
            return
        self._keep(
            node_id, self._merge_outputs(node_type, [c.values for c in calls]), _merge_ui(c.ui for c in calls)
        )

    def _keep(self, node_id: str, outputs: tuple[list[Any], ...], ui: dict[str, Any] | None) -> None:
        self.values[node_id] = outputs
        self.cache.put(self.signatures[node_id], outputs, ui)
        if ui:
            self.result.outputs[node_id] = ui
            self.sink.emit(ev.Executed(self.prompt_id, node_id, ui, self.display.get(node_id, node_id)))
        self._done(node_id)

    @staticmethod
    def _merge_outputs(node_type: NodeType, per_call: list[tuple[Any, ...]]) -> tuple[list[Any], ...]:
        slots = node_type.schema.outputs
        merged: tuple[list[Any], ...] = tuple([] for _ in slots)
        for values in per_call:
            for slot, value, out in zip(slots, values, merged):
                out.extend(value) if slot.is_list else out.append(value)
        return merged

    # --- expansion -----------------------------------------------------------------------------
    def _expand(self, node_id: str, calls: list[NodeOutput]) -> None:
        """Add the node's returned graphs; the node completes once the links it returned resolve."""
        pending: list[NodeOutput] = []
        for index, call in enumerate(calls):
            graph = dict(call.expand or {})
            prefix = f"{node_id}.{index}."
            fresh = parse_prompt(graph) if graph else {}
            renamed = {old: prefix + old for old in fresh}
            for old, node in fresh.items():
                unknown = node.class_type not in self.registry
                if unknown:
                    exc = KeyError(f"expansion uses unknown node type {node.class_type!r}")
                    self._fail(node_id, self._type(node_id), {}, exc)
                inputs = {
                    k: (Link(renamed.get(v.node_id, v.node_id), v.slot) if isinstance(v, Link) else v)
                    for k, v in node.inputs.items()
                }
                self.nodes[renamed[old]] = PromptNode(renamed[old], node.class_type, inputs, node.title)
                self.display[renamed[old]] = self.display.get(node_id, node_id)
            self._sign(renamed.values())
            values = tuple(_relink(v, renamed) for v in call.values)
            pending.append(NodeOutput(values, ui=call.ui))
            for new_id in renamed.values():
                if self._type(new_id).schema.is_output_node:
                    self._schedule(new_id)
        self.expanding[node_id] = pending
        for call in pending:
            for value in call.values:
                if isinstance(value, Link):
                    self._schedule(value.node_id, user=node_id)
        if not self.blockers.get(node_id):
            self.ready.append(node_id)

    def _finish_expansion(self, node_id: str) -> None:
        calls = self.expanding.pop(node_id)
        slots = self._type(node_id).schema.outputs
        merged: tuple[list[Any], ...] = tuple([] for _ in slots)
        for call in calls:
            for slot, value, out in zip(slots, call.values, merged):
                if isinstance(value, Link):  # the linked node's whole output list becomes ours
                    out.extend(self.values[value.node_id][value.slot])
                else:
                    out.extend(value) if slot.is_list else out.append(value)
        self._keep(node_id, merged, _merge_ui(c.ui for c in calls))


def _relink(value: Any, renamed: Mapping[str, str]) -> Any:
    link = to_link(value)
    if link is None:
        return value
    return Link(renamed.get(link.node_id, link.node_id), link.slot)


def _merge_ui(uis: Iterable[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    merged: dict[str, Any] = {}
    for ui in uis:
        for key, value in (ui or {}).items():
            if isinstance(value, list) and isinstance(merged.get(key), list):
                merged[key] = merged[key] + value
            else:
                merged[key] = list(value) if isinstance(value, list) else value
    return merged or None
