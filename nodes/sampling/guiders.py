"""Guiders beyond CFG (ComfyUI's DualCFGGuider and CFGZeroStar; the AdaptiveGuidance packs' nodes).

Each guider node returns a GUIDER whose `build` makes the run's denoiser from `models.sampling`;
CFGZeroStar patches the MODEL with a post-CFG function, as ComfyUI's node does.
"""

from __future__ import annotations

from typing import Any

from executor.schema import Combo, Float, Int, Node, Output, Schema, Typed
from models.patches import ModelHandle
from models.sampling import AdaptiveState, adaptive_denoiser, cfg_zero_star, dual_cfg_denoiser
from nodes.runtime.types import GUIDER
from nodes.sampling.run import GuidanceInputs, Guider

_GUIDERS = "sampling/custom_sampling/guiders"


def _cfg(name: str = "cfg") -> Any:
    return Float(name, 8.0, min=0.0, max=100.0, step=0.1, round=0.01)


def _threshold() -> Any:
    return Float("threshold", 0.990, min=0.90, max=1.0, step=0.0001, round=0.0001)


def _uncond_zero_scale() -> Any:
    return Float("uncond_zero_scale", 0.0, max=2.0, step=0.01, optional=True)


class DualCFGGuider(Node):
    schema = Schema(
        "DualCFGGuider",
        category=_GUIDERS,
        outputs=(GUIDER,),
        inputs=(
            Typed("model", "MODEL"),
            Typed("cond1", "CONDITIONING"),
            Typed("cond2", "CONDITIONING"),
            Typed("negative", "CONDITIONING"),
            _cfg("cfg_conds"),
            _cfg("cfg_cond2_negative"),
            Combo("style", ("regular", "nested")),
        ),
    )

    @classmethod
    def execute(
        cls,
        model: ModelHandle,
        cond1: Any,
        cond2: Any,
        negative: Any,
        cfg_conds: float,
        cfg_cond2_negative: float,
        style: str,
    ) -> tuple[Guider]:
        def build(run: GuidanceInputs) -> Any:
            return dual_cfg_denoiser(
                run.model_fn,
                run.positive,
                run.extra["middle"],
                run.negative,
                cfg_conds,
                cfg_cond2_negative,
                nested=style == "nested",
                post_cfg=run.post_cfg,
            )

        return (Guider(model, cond1, negative, cfg_conds, build=build, conds={"middle": cond2}),)


class CFGZeroStar(Node):
    schema = Schema(
        "CFGZeroStar",
        category="advanced/guidance",
        inputs=(Typed("model", "MODEL"),),
        outputs=(Output("MODEL", "patched_model"),),
    )

    @classmethod
    def execute(cls, model: ModelHandle) -> tuple[ModelHandle]:
        post_cfg = (*model.options.extras.get("post_cfg", ()), cfg_zero_star)
        return (model.with_options(extras=dict(model.options.extras, post_cfg=post_cfg)),)


def _adaptive(
    model: ModelHandle,
    positive: Any,
    negative: Any,
    threshold: float,
    cfg: float,
    *,
    cfg_start_pct: float | None,
    initial_disabled_steps: int | None,
) -> Guider:
    def build(run: GuidanceInputs) -> Any:
        start = None if cfg_start_pct is None else run.model_sampling.percent_to_sigma(cfg_start_pct)
        return adaptive_denoiser(
            run.model_fn,
            run.positive,
            run.negative,
            cfg,
            threshold=threshold,
            cfg_start_sigma=start,
            initial_disabled_calls=initial_disabled_steps,
            batch_conds=run.batch_conds,
            post_cfg=run.post_cfg,
            state=AdaptiveState(),
        )

    return Guider(model, positive, negative, cfg, build=build)


class AdaptiveGuidance(Node):
    schema = Schema(
        "AdaptiveGuidance",
        display_name="AdaptiveGuider",
        category=_GUIDERS,
        outputs=(GUIDER,),
        inputs=(
            Typed("model", "MODEL"),
            Typed("positive", "CONDITIONING"),
            Typed("negative", "CONDITIONING"),
            _threshold(),
            _cfg(),
            _uncond_zero_scale(),
            Float("cfg_start_pct", 0.0, max=1.0, step=0.01, optional=True),
        ),
        description="Skips the negative prompt once the conditional and unconditional predictions align "
        "(cosine similarity >= threshold). uncond_zero_scale (experimental in the pack) is accepted and ignored.",
    )

    @classmethod
    def execute(
        cls,
        model: ModelHandle,
        positive: Any,
        negative: Any,
        threshold: float,
        cfg: float,
        uncond_zero_scale: float = 0.0,
        cfg_start_pct: float = 0.0,
    ) -> tuple[Guider]:
        return (
            _adaptive(
                model,
                positive,
                negative,
                threshold,
                cfg,
                cfg_start_pct=cfg_start_pct,
                initial_disabled_steps=None,
            ),
        )


class AdaptiveGuidanceV2(Node):
    schema = Schema(
        "AdaptiveGuidanceV2",
        display_name="AdaptiveGuiderWithInit",
        category=_GUIDERS,
        outputs=(GUIDER,),
        inputs=(
            Typed("model", "MODEL"),
            Typed("positive", "CONDITIONING"),
            Typed("negative", "CONDITIONING"),
            _threshold(),
            _cfg(),
            Int("initial_disabled_steps", 0, min=0, max=10000),
            _uncond_zero_scale(),
        ),
        description="AdaptiveGuidance that evaluates the positive only for the first initial_disabled_steps "
        "model calls.",
    )

    @classmethod
    def execute(
        cls,
        model: ModelHandle,
        positive: Any,
        negative: Any,
        threshold: float,
        cfg: float,
        initial_disabled_steps: int,
        uncond_zero_scale: float = 0.0,
    ) -> tuple[Guider]:
        return (
            _adaptive(
                model,
                positive,
                negative,
                threshold,
                cfg,
                cfg_start_pct=None,
                initial_disabled_steps=initial_disabled_steps,
            ),
        )


NODES = (DualCFGGuider, CFGZeroStar, AdaptiveGuidance, AdaptiveGuidanceV2)
