"""LoRA training for FLUX: datasets and caches, adapters, the flow-matching loop, state and files."""

from __future__ import annotations

from .adapters import AdapterSet, attach, create, lora_state_dict, target_modules
from .checkpoint import TrainState, atomic_write, load_state, save_state, state_path_for
from .config import TrainConfig, TrainConfigError
from .data import Sample, TrainingData, load_shards, save_shards
from .loop import StepReport, TrainResult, train
from .step import evaluation_loss

__all__ = [
    "AdapterSet",
    "Sample",
    "StepReport",
    "TrainConfig",
    "TrainConfigError",
    "TrainResult",
    "TrainState",
    "TrainingData",
    "atomic_write",
    "attach",
    "create",
    "evaluation_loss",
    "load_shards",
    "load_state",
    "lora_state_dict",
    "save_shards",
    "save_state",
    "state_path_for",
    "target_modules",
    "train",
]
