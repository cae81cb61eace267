"""Training settings: one frozen dataclass, validated on construction, serialisable to JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

ALGORITHMS = ("LoRA", "LoHa", "LoKr", "OFT")
OPTIMIZERS = ("AdamW", "Adam", "SGD", "RMSprop")
LOSS_FUNCTIONS = ("MSE", "L1", "Huber", "SmoothL1")
TIMESTEP_SAMPLINGS = ("flux_shift", "shift", "sigmoid", "logit_normal", "uniform")
LR_SCHEDULES = ("constant", "linear", "cosine")
LOSS_TARGETS = ("velocity", "x0")
TARGET_PRESETS = ("all_linear", "attention", "no_modulation", "all_with_embedders")
KEY_STYLES = ("comfyui", "kohya", "diffusers")


class TrainConfigError(ValueError):
    """A training setting out of range (names the field)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run's numbers.

    Defaults follow ComfyUI's TrainLoraNode where it has the setting (rank 8, alpha 1, lr 5e-4,
    AdamW, MSE, 16 steps, batch 1) and FLUX practice where it has none (guidance 1.0, velocity
    loss, resolution-aware shifted sigmoid timesteps).
    """

    steps: int = 16
    batch_size: int = 1
    grad_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    optimizer: str = "AdamW"
    weight_decay: float = 0.01
    loss_function: str = "MSE"
    seed: int = 0
    algorithm: str = "LoRA"
    rank: int = 8
    alpha: float = 1.0
    lokr_factor: int = -1
    targets: str = "all_linear"
    lora_dtype: str = "fp32"
    training_dtype: str = "fp32"
    gradient_checkpointing: bool = False
    # FLUX specifics
    guidance: float | None = 1.0  # None: the conditioning's own value (ComfyUI: 3.5 if unset)
    loss_target: str = "velocity"
    timestep_sampling: str = "flux_shift"
    sigmoid_scale: float = 1.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    discrete_flow_shift: float = 3.1582
    # schedule and regularisation
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 0.0  # 0: no clipping
    ema_decay: float = 0.0  # 0: no EMA
    caption_dropout: float = 0.0
    # bookkeeping
    eval_every: int = 0  # fixed-timestep evaluation loss every N steps (0: never)
    save_every: int = 0  # periodic LoRA + state saves every N steps (0: only at the end)
    validate_every: int = 0  # validation images every N steps (0: never)
    loss_smoothing: float = 0.9
    key_style: str = "comfyui"

    def __post_init__(self) -> None:
        for name, low in (("steps", 1), ("batch_size", 1), ("grad_accumulation_steps", 1), ("rank", 1)):
            if getattr(self, name) < low:
                raise TrainConfigError(f"{name} must be >= {low}, got {getattr(self, name)}")
        for name, choices in (
            ("algorithm", ALGORITHMS),
            ("optimizer", OPTIMIZERS),
            ("loss_function", LOSS_FUNCTIONS),
            ("timestep_sampling", TIMESTEP_SAMPLINGS),
            ("lr_schedule", LR_SCHEDULES),
            ("loss_target", LOSS_TARGETS),
            ("targets", TARGET_PRESETS),
            ("key_style", KEY_STYLES),
            ("lora_dtype", ("fp32", "bf16")),
            ("training_dtype", ("fp32", "bf16", "none")),
        ):
            if getattr(self, name) not in choices:
                raise TrainConfigError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise TrainConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name in ("caption_dropout", "ema_decay", "min_lr_ratio", "loss_smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0 + (name == "min_lr_ratio"):
                raise TrainConfigError(f"{name} must be in [0, 1), got {value}")
        for name in ("warmup_steps", "eval_every", "save_every", "validate_every"):
            if getattr(self, name) < 0:
                raise TrainConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.key_style == "diffusers" and self.algorithm != "LoRA":
            raise TrainConfigError("key_style 'diffusers' (PEFT keys) holds LoRA only, not LoHa / LoKr / OFT")
        if self.max_grad_norm < 0 or self.alpha <= 0 or self.discrete_flow_shift <= 0 or self.logit_std <= 0:
            raise TrainConfigError("max_grad_norm must be >= 0; alpha, discrete_flow_shift, logit_std > 0")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
