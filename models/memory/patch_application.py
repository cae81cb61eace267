"""Applying a handle's patches to a tracked model: as weight edits on device copies, or as forward-time
adapters (bypass, and always for fp8 weights); changing patches drops only the tensors that change."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.patches import WeightPatch
from models.patching import LinearAdapter, Part, PatchTargetError, adapter_for, can_bypass, group_patches

from .core import ManagerCore, log
from .records import ModelEntry


class PatchApplication(ManagerCore):
    """The handle's patches on a tracked model; exact undo because masters are never modified."""

    def _set_patches(self, entry: ModelEntry, part: Part) -> None:
        if patch_signature(part.patches) == patch_signature(entry.patches) and part.bypass == entry.bypass:
            return
        if entry.locks > 1:
            raise RuntimeError(
                f"{entry.label} is already in use with other patches; use one handle of a model at a time"
            )
        module = entry.module
        assert module is not None
        grouped: dict[str, tuple[WeightPatch, ...]] = {}
        for key, patches in group_patches(part.patches).items():
            if key not in entry.alias:
                raise PatchTargetError(
                    f"{entry.label} has no tensor {key!r} (patch from {patches[0].source or '?'})"
                )
            grouped[entry.alias[key]] = grouped.get(entry.alias[key], ()) + patches
        edits: dict[str, tuple[WeightPatch, ...]] = {}
        bypassed: dict[str, tuple[WeightPatch, ...]] = {}
        for key, patches in grouped.items():
            record = entry.tensors[key]
            owner, attr = record.owners()[0]
            wants_bypass = part.bypass or any(
                is_fp8_tensor(entry.tensors[k].master) for k in entry.keys_of_owner.get(id(owner), ())
            )
            if wants_bypass and can_bypass(owner, attr, patches):
                bypassed[key] = patches
            else:
                edits[key] = patches
        changed = set(edits) | set(entry.edits)
        changed = {k for k in changed if edits.get(k) != entry.edits.get(k)}
        self._remove_adapters(entry)
        stale = changed & entry.on_device
        self._drop(entry, stale)
        entry.edits = edits
        entry.patches, entry.bypass = part.patches, part.bypass
        if entry.plan is not None:
            self._forget_window(entry, entry.plan)
            resident = {k for k in stale if entry.plan.unit_of_key.get(k) is None}
            self._bring(entry, resident)
        if entry.loaded:
            self._install_adapters(entry, bypassed)
        entry.bypassed = bypassed
        entry.adapter_estimate = sum(entry.tensors[k].master.numel() * 4 for k in bypassed)  # float32 deltas
        if part.patches:
            log.info(
                "%s: %d patched tensors (%d as weight edits, %d as forward-time adapters)",
                entry.label,
                len(grouped),
                len(edits),
                len(bypassed),
            )

    def _install_adapters(self, entry: ModelEntry, bypassed: dict[str, tuple[WeightPatch, ...]]) -> None:
        by_owner: dict[int, tuple[nn.Module, dict[str, tuple[WeightPatch, ...]]]] = {}
        for key, patches in bypassed.items():
            owner, attr = entry.tensors[key].owners()[0]
            by_owner.setdefault(id(owner), (owner, {}))[1][attr] = patches
        device = self._device_of(entry).torch_device
        for owner, attrs in by_owner.values():
            assert isinstance(owner, nn.Linear)
            prefix = _key_prefix(entry, owner)  # the owner's name, as its tensors spell it
            weight = entry.tensors[entry.alias[prefix + "weight"]].master
            bias_key = entry.alias.get(prefix + "bias")
            bias = entry.tensors[bias_key].master if bias_key else None
            adapter: LinearAdapter = adapter_for(
                owner, attrs.get("weight", ()), attrs.get("bias", ()), weight, bias, device
            )
            entry.adapters.append(owner.register_forward_hook(adapter))
            if not entry.on_host:
                entry.adapter_bytes += adapter.nbytes
        self._account()

    def _remove_adapters(self, entry: ModelEntry) -> None:
        for hook in entry.adapters:
            hook.remove()
        entry.adapters.clear()
        entry.adapter_bytes = 0


def is_fp8_tensor(t: torch.Tensor) -> bool:
    return t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)


def _key_prefix(entry: ModelEntry, owner: nn.Module) -> str:
    for key in entry.keys_of_owner.get(id(owner), ()):
        for o, attr in entry.tensors[key].owners():
            if o is owner and key.endswith(attr):
                return key[: len(key) - len(attr)]
    return ""


def patch_signature(patches: tuple[WeightPatch, ...]) -> tuple[Any, ...]:
    """What makes two patch tuples act the same (CLIP parts re-key patches into new objects)."""
    return tuple(
        (
            p.key,
            p.kind,
            p.strength,
            p.alpha,
            p.base_strength,
            p.offset,
            p.reshape,
            p.slots,
            tuple(map(id, p.tensors)),
            patch_signature(p.inner),
        )
        for p in patches
    )
