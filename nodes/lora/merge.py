"""Model merging nodes (ComfyUI's ModelMergeSimple, ModelMergeAdd, ModelMergeSubtract, ModelMergeFlux1).

A merge is patches too: the result is a clone of model1 whose every tensor gets a "diff" patch
holding model2's tensor, with `base_strength` on model1's value and `strength` on model2's
(ComfyUI's `add_patches(model2 weights, strength_patch, strength_model)`), and model2's own patches
as `inner` patches applied to its tensor first. Nothing is computed until the memory manager
places the weights. Tensors whose shapes differ (a Fill model's img_in, say) are skipped with a
warning, as ComfyUI does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from executor.schema import Float, Input, Node, Output, Schema, Typed
from models.patches import ModelHandle, WeightPatch
from nodes.runtime.services import Ctx

log = logging.getLogger(__name__)

RATIO = dict(default=1.0, min=0.0, max=1.0, step=0.01)
CATEGORY = "advanced/model_merging"


def base_tensors(ctx: Ctx | None, handle: Any, module: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The unpatched tensors of `module` (default: handle.module) by key.

    The memory manager first puts its masters back: while placed, a module may hold device copies
    patched for another handle of the same base.
    """
    memory = ctx.services.memory if ctx is not None else None
    if memory is not None:
        memory.forget(handle)
    module = handle.module if module is None else module
    return {k: v.detach() for k, v in module.state_dict().items()}


def merge(
    ctx: Ctx | None, model1: ModelHandle, model2: ModelHandle, weights: Callable[[str], tuple[float, float]]
) -> ModelHandle:
    """model1 + per-key patches from model2; weights(key) = (model1 factor, model2 factor)."""
    mine = {k: tuple(v.shape) for k, v in model1.module.state_dict(keep_vars=True).items()}
    inner: dict[str, list[WeightPatch]] = {}
    for patch in model2.patches:
        inner.setdefault(patch.key, []).append(patch)
    patches, skipped = [], []
    for key, tensor in base_tensors(ctx, model2).items():
        if mine.get(key) != tuple(tensor.shape) or any(p.reshape for p in inner.get(key, ())):
            skipped.append(key)
            continue
        own, other = weights(key)
        if own == 1.0 and other == 0.0:
            continue
        patches.append(
            WeightPatch(
                key,
                "diff",
                (tensor,),
                strength=other,
                base_strength=own,
                inner=tuple(inner.get(key, ())),
                source="model merge",
            )
        )
    if skipped:
        log.warning(
            "model merge: %d tensors differ in shape and keep model1's values: %s", len(skipped), skipped[:8]
        )
    return model1.with_patches(*patches)


class ModelMergeSimple(Node):
    schema = Schema(
        "ModelMergeSimple",
        category=CATEGORY,
        inputs=(Typed("model1", "MODEL"), Typed("model2", "MODEL"), Float("ratio", **RATIO)),
        outputs=(Output("MODEL"),),
        python_module="comfy_extras.nodes_model_merging",
    )

    @classmethod
    def execute(cls, ctx: Ctx, model1: ModelHandle, model2: ModelHandle, ratio: float) -> tuple[ModelHandle]:
        """ratio * model1 + (1 - ratio) * model2."""
        return (merge(ctx, model1, model2, lambda key: (ratio, 1.0 - ratio)),)


class ModelMergeSubtract(Node):
    schema = Schema(
        "ModelMergeSubtract",
        category=CATEGORY,
        inputs=(
            Typed("model1", "MODEL"),
            Typed("model2", "MODEL"),
            Float("multiplier", 1.0, min=-10.0, max=10.0, step=0.01),
        ),
        outputs=(Output("MODEL"),),
        python_module="comfy_extras.nodes_model_merging",
    )

    @classmethod
    def execute(
        cls, ctx: Ctx, model1: ModelHandle, model2: ModelHandle, multiplier: float
    ) -> tuple[ModelHandle]:
        """model1 - multiplier * model2."""
        return (merge(ctx, model1, model2, lambda key: (1.0, -multiplier)),)


class ModelMergeAdd(Node):
    schema = Schema(
        "ModelMergeAdd",
        category=CATEGORY,
        inputs=(Typed("model1", "MODEL"), Typed("model2", "MODEL")),
        outputs=(Output("MODEL"),),
        python_module="comfy_extras.nodes_model_merging",
    )

    @classmethod
    def execute(cls, ctx: Ctx, model1: ModelHandle, model2: ModelHandle) -> tuple[ModelHandle]:
        """model1 + model2."""
        return (merge(ctx, model1, model2, lambda key: (1.0, 1.0)),)


# ModelMergeFlux1's sliders: each weighs model1 for the keys starting with it (longest match wins).
FLUX1_PREFIXES = (
    ("img_in.", "time_in.", "guidance_in", "vector_in.", "txt_in.")
    + tuple(f"double_blocks.{i}." for i in range(19))
    + tuple(f"single_blocks.{i}." for i in range(38))
    + ("final_layer.",)
)


def _flux1_inputs() -> tuple[Input, ...]:
    return tuple(Float(prefix, **RATIO) for prefix in FLUX1_PREFIXES)


def prefix_ratio(key: str, ratios: dict[str, float]) -> float:
    """The ratio of the longest prefix of `key` among `ratios` (1.0: keep model1 when none matches)."""
    best, ratio = -1, 1.0
    for prefix, value in ratios.items():
        if key.startswith(prefix) and len(prefix) > best:
            best, ratio = len(prefix), value
    return ratio


class ModelMergeFlux1(Node):
    schema = Schema(
        "ModelMergeFlux1",
        category=CATEGORY + "/model_specific",
        inputs=(Typed("model1", "MODEL"), Typed("model2", "MODEL"), *_flux1_inputs()),
        outputs=(Output("MODEL"),),
        python_module="comfy_extras.nodes_model_merging_model_specific",
    )

    @classmethod
    def execute(
        cls, ctx: Ctx, model1: ModelHandle, model2: ModelHandle, **ratios: float
    ) -> tuple[ModelHandle]:
        """Per block: ratio * model1 + (1 - ratio) * model2."""

        def weights(key: str) -> tuple[float, float]:
            ratio = prefix_ratio(key, ratios)
            return ratio, 1.0 - ratio

        return (merge(ctx, model1, model2, weights),)


NODES = (ModelMergeSimple, ModelMergeSubtract, ModelMergeAdd, ModelMergeFlux1)
