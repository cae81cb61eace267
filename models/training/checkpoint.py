"""Atomic files, LoRA files and full training state (resume), all safetensors.

A LoRA file holds the adapters under ComfyUI / kohya keys with `.alpha` and the training settings
in its metadata. A state file additionally holds the optimizer state, the EMA weights, the step,
the data cursor and the loss history; the random draws of a step are a function of (seed, step)
(see `data.step_generator`), so (seed, step, cursor) is the whole RNG state. Every file is written
to a temporary name in the same folder, flushed to disk and renamed over the target, so a crash
leaves the previous file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from models.formats.canonical import safetensors_bytes

STATE_FORMAT = "fluxloom.train_state.v1"


def atomic_write(path: Path | str, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_path)`, fsync, then rename onto `path`; on any error the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable where the platform allows
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def save_safetensors(path: Path | str, tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> Path:
    """Atomically write a canonical safetensors file (see `safetensors_bytes`)."""
    blob = safetensors_bytes(tensors, metadata)

    def write(tmp: Path) -> None:
        if not blob:
            raise OSError("empty safetensors payload")
        save_blob(tmp, blob)

    return atomic_write(path, write)


def save_blob(tmp: Path, blob: bytes) -> None:
    with open(tmp, "wb") as f:
        f.write(blob)


def read_safetensors(path: Path | str) -> tuple[dict[str, Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def lora_metadata(
    config_json: str,
    *,
    steps: int,
    algorithm: str,
    rank: int,
    alpha: float,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Safetensors metadata of a saved LoRA: kohya's common `ss_*` fields plus our settings."""
    meta = {
        "ss_network_module": "networks.lora_flux" if algorithm == "LoRA" else "lycoris.kohya",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_steps": str(steps),
        "ss_base_model_version": "flux1",
        "modelspec.architecture": "flux-1-dev/lora",
        "fluxloom.algorithm": algorithm,
        "fluxloom.key_style": json.loads(config_json).get("key_style", "comfyui"),
        "fluxloom.training": config_json,
    }
    meta.update(extra or {})
    return meta


# --- training state ----------------------------------------------------------------------------


@dataclass
class TrainState:
    """Where a run is: optimizer steps done, data cursor, loss history, and the tensors to restore."""

    step: int = 0
    cursor: int = 0
    losses: list[float] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    adapters: dict[str, Tensor] = field(default_factory=dict)
    ema: dict[str, Tensor] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    config_json: str = "{}"


def _optimizer_to_files(state: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_files(tensors: Mapping[str, Tensor], info: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, entries in info.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    return {"state": state, "param_groups": info["param_groups"]}


def save_state(path: Path | str, state: TrainState) -> Path:
    """Write `state` to one safetensors file (atomically)."""
    opt_tensors, opt_info = _optimizer_to_files(state.optimizer) if state.optimizer else ({}, {})
    tensors = {f"adapter.{k}": v for k, v in state.adapters.items()}
    tensors.update({f"ema.{k}": v for k, v in state.ema.items()})
    tensors.update(opt_tensors)
    info = {
        "format": STATE_FORMAT,
        "step": state.step,
        "cursor": state.cursor,
        "losses": state.losses,
        "eval_losses": state.eval_losses,
        "optimizer": opt_info,
    }
    return save_safetensors(
        path, tensors, {"fluxloom.state": json.dumps(info), "fluxloom.training": state.config_json}
    )


def load_state(path: Path | str) -> TrainState:
    tensors, meta = read_safetensors(path)
    if "fluxloom.state" not in meta:
        raise ValueError(f"{path} is not a training state file (no fluxloom.state metadata)")
    info = json.loads(meta["fluxloom.state"])
    if info.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: unknown state format {info.get('format')!r}")
    return TrainState(
        step=int(info["step"]),
        cursor=int(info["cursor"]),
        losses=[float(x) for x in info["losses"]],
        eval_losses=[(int(s), float(v)) for s, v in info.get("eval_losses", [])],
        adapters={k[len("adapter.") :]: v for k, v in tensors.items() if k.startswith("adapter.")},
        ema={k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")},
        optimizer=_optimizer_from_files(tensors, info["optimizer"]) if info.get("optimizer") else {},
        config_json=meta.get("fluxloom.training", "{}"),
    )


def state_path_for(lora_path: Path | str) -> Path:
    """`x.safetensors` -> `x.state.safetensors` (the resume file saved beside a LoRA)."""
    p = Path(lora_path)
    return (
        p.with_name(p.name[: -len(".safetensors")] + ".state.safetensors")
        if p.name.endswith(".safetensors")
        else p.with_name(p.name + ".state.safetensors")
    )


def to_torch_dtype(name: str) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
