"""Signature-keyed node outputs: what changed re-runs, nothing else.

A node's signature hashes its class, its `fingerprint` (IS_CHANGED) result, its literal inputs and
the signatures of the nodes it links to, so editing one widget changes the signature of that node
and of everything downstream of it, and nothing else.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .prompt_nodes import Link, PromptNode
from .registry import NodeType

_never_equal = itertools.count()  # fingerprints of NaN ("always changed") get a fresh token


@dataclass(frozen=True, eq=False)
class CachedOutput:
    outputs: tuple[list[Any], ...]  # one list per output slot (ComfyUI's list semantics)
    ui: Mapping[str, Any] | None = None
    size: int = 0


def _token(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return f"nan#{next(_never_equal)}"
    return repr(value)


def node_signature(
    node: PromptNode, node_type: NodeType, upstream: Mapping[str, str], fingerprint: Any
) -> str:
    """Hash of everything that determines a node's outputs. `upstream` maps node id -> signature."""
    parts = [node.class_type, "None" if fingerprint is None else _token(fingerprint)]
    if node_type.schema.signs_node_id:
        parts.append(f"#id={node.node_id}")
    inputs = node.inputs
    for name in sorted(inputs):
        value = inputs[name]
        if type(value) is Link:
            source = upstream.get(value.node_id)
            if source is None:
                # A link outside the run (an undeclared input naming a node that is not in the prompt;
                # validation refuses those) still signs deterministically instead of failing the run.
                source = f"missing:{value.node_id!r}"
            parts.append(f"{name}=@{source}:{value.slot}")
        else:
            parts.append(f"{name}={value!r}")
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def compute_signatures(
    order: Iterable[str],
    nodes: Mapping[str, PromptNode],
    types: Mapping[str, NodeType],
    fingerprints: Mapping[str, Any],
    into: dict[str, str] | None = None,
) -> dict[str, str]:
    """Signatures for `order` (a topological order); `into` may already hold upstream signatures."""
    signatures = {} if into is None else into
    for node_id in order:
        node = nodes[node_id]
        signatures[node_id] = node_signature(
            node, types[node.class_type], signatures, fingerprints.get(node_id)
        )
    return signatures


class OutputCache:
    """LRU store of node outputs bounded by entry count and by a byte budget.

    Sizes come from the `sizeof` hook (main.py installs a torch-aware one) so the engine stays
    torch-free; the default counts every entry as zero bytes.
    """

    def __init__(
        self,
        *,
        max_bytes: int | None = None,
        max_entries: int = 100_000,
        sizeof: Callable[[tuple[list[Any], ...]], int] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.sizeof = sizeof or (lambda outputs: 0)
        self._entries: OrderedDict[str, CachedOutput] = OrderedDict()
        self._bytes = 0

    def get(self, signature: str) -> CachedOutput | None:
        entry = self._entries.get(signature)
        if entry is not None:
            self._entries.move_to_end(signature)
        return entry

    def __contains__(self, signature: str) -> bool:
        return signature in self._entries

    def put(
        self, signature: str, outputs: tuple[list[Any], ...], ui: Mapping[str, Any] | None = None
    ) -> None:
        old = self._entries.pop(signature, None)
        if old is not None:
            self._bytes -= old.size
        entry = CachedOutput(outputs, ui, self.sizeof(outputs))
        self._entries[signature] = entry
        self._bytes += entry.size
        self._evict()

    def _evict(self) -> None:
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_entries
            or (self.max_bytes is not None and self._bytes > self.max_bytes)
        ):
            _, entry = self._entries.popitem(last=False)
            self._bytes -= entry.size

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes
