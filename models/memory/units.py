"""Splitting a model into units that move to the compute device together (streaming plans).

A unit is a module subtree whose tensors are all moved in before its forward and out after it.
The split is by size: a subtree no larger than `max_unit` bytes is one unit; a bigger one is split
into its children, so the repeated blocks of a transformer (or of a T5 / CLIP stack nested inside
a transformers model) come out as one unit each, and a VAE splits down to its layers when it has to.
Tensors a module owns directly while its children are split (norm scales of a container, position
ids), and tensors shared by several modules (T5's tied embedding), stay resident: they are "fixed".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers in their current dtypes (shared tensors once)."""
    seen: dict[int, int] = {}
    for t in _tensors(module, recurse=True):
        seen[id(t)] = tensor_bytes(t)
    return sum(seen.values())


def _tensors(module: nn.Module, *, recurse: bool) -> Iterator[torch.Tensor]:
    yield from module.parameters(recurse=recurse)
    yield from (b for b in module.buffers(recurse=recurse) if b is not None)


def named_tensors(module: nn.Module) -> Iterator[tuple[str, nn.Module, str, torch.Tensor]]:
    """(full name, owning module, attribute, tensor) for every parameter and buffer, aliases included."""
    for prefix, owner in module.named_modules(remove_duplicate=False):
        for attr, t in list(owner._parameters.items()) + list(owner._buffers.items()):
            if t is not None:
                yield (f"{prefix}.{attr}" if prefix else attr), owner, attr, t


@dataclass(eq=False)
class Unit:
    """One streaming unit: `module`'s whole subtree; `keys` its tensor names (relative to the model root)."""

    module: nn.Module | None  # None once a plan holds it (plans keep names, not modules)
    keys: tuple[str, ...]
    size: int
    index: int


@dataclass
class Partition:
    units: list[Unit]
    fixed: tuple[str, ...]  # tensors that never stream
    fixed_bytes: int

    @property
    def largest(self) -> int:
        return max((u.size for u in self.units), default=0)


def repeated_block_bytes(module: nn.Module) -> int:
    """Size of the largest child of any ModuleList inside `module` (0 when it has none)."""
    sizes = [module_bytes(block) for m in module.modules() if isinstance(m, nn.ModuleList) for block in m]
    return max(sizes, default=0)


def partition(module: nn.Module, max_unit: int) -> Partition:
    """Split `module` into units of at most `max_unit` bytes where its structure allows (module doc)."""
    names_of: dict[int, list[str]] = {}
    size_of: dict[int, int] = {}
    for name, _owner, _attr, t in named_tensors(module):
        names_of.setdefault(id(t), []).append(name)
        size_of[id(t)] = tensor_bytes(t)
    # A tensor with several owners streams only when each owner holds nothing else (tied embeddings):
    # the unit's pre-hooks sit on all of them. Otherwise it is fixed.
    owners_of: dict[int, list[nn.Module]] = {}
    for _name, owner, _attr, t in named_tensors(module):
        owners_of.setdefault(id(t), []).append(owner)
    fixed_ids = {
        tid
        for tid, owners in owners_of.items()
        if len(owners) > 1 and any(sum(1 for _ in _tensors(o, recurse=False)) > 1 for o in owners)
    }
    shared = frozenset(fixed_ids)
    placed: set[int] = set()
    units: list[Unit] = []

    def own(m: nn.Module, recurse: bool) -> list[int]:
        ids = (id(t) for t in _tensors(m, recurse=recurse))
        return [tid for tid in dict.fromkeys(ids) if tid not in shared and tid not in placed]

    def visit(m: nn.Module) -> None:
        ids = own(m, recurse=True)
        if not ids:
            return
        total = sum(size_of[tid] for tid in ids)
        if total <= max_unit or not any(True for _ in m.children()):
            units.append(Unit(m, tuple(names_of[tid][0] for tid in ids), total, len(units)))
            placed.update(ids)
            return
        direct = own(m, recurse=False)
        fixed_ids.update(direct)
        placed.update(direct)
        for child in m.children():
            visit(child)

    visit(module)
    fixed = tuple(names_of[tid][0] for tid in names_of if tid in fixed_ids)
    return Partition(units, fixed, sum(size_of[tid] for tid in fixed_ids))
