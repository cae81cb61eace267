"""Dependency order of prompt nodes: what the outputs need, Kahn's order, and the nodes on cycles.

Iterative throughout, so 10k-deep chains never hit the recursion limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .graph import PromptNode


def dependency_closure(roots: Iterable[str], nodes: Mapping[str, PromptNode]) -> list[str]:
    """Every node the roots depend on (roots included), iteratively so 10k-deep chains are fine."""
    seen: set[str] = set()
    order: list[str] = []
    stack = [r for r in roots]
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id not in nodes:
            continue
        seen.add(node_id)
        order.append(node_id)
        stack.extend(nodes[node_id].sources)
    return order


def topological_order(
    node_ids: Iterable[str], nodes: Mapping[str, PromptNode]
) -> tuple[list[str], list[str]]:
    """Kahn's algorithm over the given nodes. Returns (ordered, nodes left in or behind cycles)."""
    members = set(node_ids)
    indegree = dict.fromkeys(members, 0)
    users: dict[str, list[str]] = {n: [] for n in members}
    for node_id in members:
        for source in nodes[node_id].sources & members:
            indegree[node_id] += 1
            users[source].append(node_id)
    ready = [n for n, d in indegree.items() if d == 0]
    ordered: list[str] = []
    while ready:
        node_id = ready.pop()
        ordered.append(node_id)
        for user in users[node_id]:
            indegree[user] -= 1
            if indegree[user] == 0:
                ready.append(user)
    return ordered, sorted(n for n, d in indegree.items() if d > 0)


def cycle_members(blocked: list[str], nodes: Mapping[str, PromptNode]) -> set[str]:
    """Of the nodes Kahn could not order, those actually on a cycle (not merely downstream of one)."""
    members = set(blocked)
    reach: dict[str, set[str]] = {}
    for start in blocked:
        seen, stack = set(), [start]
        while stack:
            for _, link in nodes[stack.pop()].links():
                if link.node_id in members and link.node_id not in seen:
                    seen.add(link.node_id)
                    stack.append(link.node_id)
        reach[start] = seen
    return {n for n in blocked if n in reach[n]}
