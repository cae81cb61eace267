"""Dependency order of prompt nodes: what the outputs need, Kahn's order, and the nodes on cycles.

Iterative throughout, so 10k-deep chains never hit the recursion limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .prompt_nodes import PromptNode


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
        for source in nodes[node_id].sources:
            if source in members:
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


def components(node_ids: Iterable[str], nodes: Mapping[str, PromptNode]) -> list[list[str]]:
    """Strongly connected components of the given nodes over their links (Tarjan's, iterative, linear).

    Every component comes after the components it depends on; a component of two or more nodes, or
    of one node linked to itself, is a dependency cycle.
    """
    members = set(node_ids)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    for root in sorted(members):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(nodes[root].sources & members)))]
        while work:
            node_id, sources = work[-1]
            advanced = False
            for source in sources:
                if source not in index:
                    index[source] = low[source] = len(index)
                    stack.append(source)
                    on_stack.add(source)
                    work.append((source, iter(sorted(nodes[source].sources & members))))
                    advanced = True
                    break
                if source in on_stack:
                    low[node_id] = min(low[node_id], index[source])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node_id])
            if low[node_id] == index[node_id]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node_id:
                        break
                out.append(component)
    return out


def is_cycle(component: list[str], nodes: Mapping[str, PromptNode]) -> bool:
    return len(component) > 1 or component[0] in nodes[component[0]].sources
