"""FLUX Redux (BFL's style model): SigLIP image tokens -> extra T5-width text tokens (flux-formats §9.2).

`tokens = redux_down(SiLU(redux_up(siglip_tokens)))`, [B, 729, 1152] -> [B, 729, 4096] for the released
file; the tokens are appended after the prompt's T5 tokens (ids zero).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.formats.errors import WrongFamilyError
from models.formats.header import inspect_weights
from models.formats.lazy import Source, load_module

log = logging.getLogger(__name__)
REDUX_KEYS = ("redux_up.weight", "redux_up.bias", "redux_down.weight", "redux_down.bias")


class ReduxImageEncoder(nn.Module):
    """Two Linears with a SiLU between them; widths from the file (1152 -> 12288 -> 4096 when released)."""

    def __init__(self, vision_dim: int, hidden_dim: int, txt_dim: int) -> None:
        super().__init__()
        self.redux_up = nn.Linear(vision_dim, hidden_dim)
        self.redux_down = nn.Linear(hidden_dim, txt_dim)

    def forward(self, image_tokens: Tensor) -> Tensor:
        """[B, N, vision_dim] -> [B, N, txt_dim] in the module's dtype."""
        x = image_tokens.to(self.redux_up.weight.dtype)
        return self.redux_down(F.silu(self.redux_up(x)))


def is_redux(keys: set[str] | list[str]) -> bool:
    return all(k in keys for k in REDUX_KEYS)


def load_redux(path: str | Path, *, compute_dtype: torch.dtype | None = None) -> ReduxImageEncoder:
    """A ReduxImageEncoder (eval) from flux1-redux-dev.safetensors (or a tiny file of the same layout)."""
    path = Path(path)
    info = inspect_weights(path)
    keys = set(info)
    if not is_redux(keys):
        raise WrongFamilyError(
            path, "a FLUX Redux style model (redux_up / redux_down)", f"{len(keys)} other tensors"
        )
    up = info.tensor("redux_up.weight").shape
    down = info.tensor("redux_down.weight").shape
    module = load_module(
        lambda: ReduxImageEncoder(up[1], up[0], down[0]), Source(info), compute_dtype=compute_dtype
    )
    log.info("%s: loaded a Redux style model (%d -> %d tokens width)", path, up[1], down[0])
    return module
