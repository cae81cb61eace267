"""Training samples, their order, and dataset caches as safetensors shards (never pickle).

A `Sample` is one cached training example: the VAE latent (LATENT space, as VAEEncode gives it),
the text encoders' outputs, and optionally a loss mask and a guidance value. The order samples are
visited in is a pure function of (seed, epoch), and a run's position in it is one integer (the
cursor), so a resumed run visits exactly the samples the uninterrupted run would have.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from .checkpoint import atomic_write, save_safetensors

log = logging.getLogger(__name__)

SHARD_FORMAT = "fluxloom.dataset.v1"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True, eq=False)
class Sample:
    """latent [C, h, w]; context [T, D]; pooled [P]; mask [h, w] in 0..1 or None; guidance or None."""

    latent: Tensor
    context: Tensor
    pooled: Tensor
    mask: Tensor | None = None
    guidance: float | None = None

    def __post_init__(self) -> None:
        if self.latent.ndim != 3 or self.context.ndim != 2 or self.pooled.ndim != 1:
            raise ValueError(
                f"sample shapes must be latent [C, h, w], context [T, D], pooled [P]; got "
                f"{tuple(self.latent.shape)}, {tuple(self.context.shape)}, {tuple(self.pooled.shape)}"
            )
        if self.mask is not None and tuple(self.mask.shape) != tuple(self.latent.shape[-2:]):
            raise ValueError(
                f"mask {tuple(self.mask.shape)} must match latent size {tuple(self.latent.shape[-2:])}"
            )

    @property
    def group_key(self) -> tuple[int, ...]:
        """Samples with equal keys can share one forward pass."""
        return (*self.latent.shape, *self.context.shape, self.mask is not None)


@dataclass(frozen=True, eq=False)
class TrainingData:
    """The samples plus the empty-caption encoding that caption dropout substitutes (if any)."""

    samples: tuple[Sample, ...]
    empty_context: Tensor | None = None
    empty_pooled: Tensor | None = None

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a training dataset needs at least one sample")

    def __len__(self) -> int:
        return len(self.samples)


# --- order --------------------------------------------------------------------------------------


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """A permutation of range(n) that depends only on (seed, epoch)."""
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919) % (2**63))
    return torch.randperm(n, generator=gen).tolist()


def take(n: int, seed: int, cursor: int, count: int) -> list[int]:
    """Sample indices at positions cursor .. cursor+count of the endless epoch-by-epoch order."""
    out: list[int] = []
    order: list[int] = []
    current = -1
    for pos in range(cursor, cursor + count):
        epoch = pos // n
        if epoch != current:
            order, current = epoch_order(n, seed, epoch), epoch
        out.append(order[pos % n])
    return out


def step_generator(seed: int, step: int, index: int = 0) -> torch.Generator:
    """The generator for one step's random draws (noise, timesteps, dropout): a function of its ids."""
    import numpy as np

    state = np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32, step, index]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0]) & ((1 << 63) - 1))


# --- shards ---------------------------------------------------------------------------------------


def _flatten(value: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    """JSON skeleton of `value`; tensors go to `tensors` under their path."""
    if isinstance(value, Tensor):
        tensors[path] = value.detach().to("cpu").contiguous()
        return {"__tensor__": path}
    if isinstance(value, dict):
        return {"__dict__": {str(k): _flatten(v, f"{path}.{k}", tensors) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return [_flatten(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    log.warning(
        "dataset shard: %s of type %s is not a tensor or JSON value; dropped", path, type(value).__name__
    )
    return None


def _unflatten(skeleton: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        return {k: _unflatten(v, tensors) for k, v in skeleton["__dict__"].items()}
    if isinstance(skeleton, list):
        return [_unflatten(v, tensors) for v in skeleton]
    return skeleton


def save_shards(folder: Path, records: Sequence[Any], shard_size: int = 1000) -> list[Path]:
    """Write `records` (nested dicts/lists of tensors and JSON values) as safetensors shards.

    folder/shard_0000.safetensors ... (the structure in each file's metadata) + metadata.json.
    Every file is written atomically; returns the shard paths.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard, start in enumerate(range(0, len(records), shard_size)):
        tensors: dict[str, Tensor] = {}
        skeleton = [
            _flatten(r, f"{start + i}", tensors) for i, r in enumerate(records[start : start + shard_size])
        ]
        path = folder / f"shard_{shard:04d}.safetensors"
        meta = {"format": SHARD_FORMAT, "records": json.dumps(skeleton)}
        save_safetensors(path, tensors, meta)
        paths.append(path)
    info = {
        "format": SHARD_FORMAT,
        "num_samples": len(records),
        "num_shards": len(paths),
        "shard_size": shard_size,
    }
    atomic_write(folder / METADATA_FILE, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2)))
    return paths


def load_shards(folder: Path) -> list[Any]:
    """The records `save_shards` wrote, in order."""
    paths = sorted(p for p in folder.glob("shard_*.safetensors"))
    if not paths:
        raise FileNotFoundError(f"no shard_*.safetensors files in {folder}")
    records: list[Any] = []
    for path in paths:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != SHARD_FORMAT:
                raise ValueError(f"{path.name} is not a {SHARD_FORMAT} shard")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        records.extend(_unflatten(s, tensors) for s in json.loads(meta["records"]))
    return records


def is_dataset_folder(folder: Path) -> bool:
    return folder.is_dir() and (
        (folder / METADATA_FILE).is_file() or any(n.endswith(".safetensors") for n in os.listdir(folder))
    )
