"""Load FLUX ControlNets from the files users have: XLabs / Mistoline single files, diffusers-layout
single files and diffusers folders (config.json + weights), detected by their keys."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from models.formats.control_flux import (
    DIFFUSERS,
    MISTOLINE,
    controlnet_kind,
    diffusers_controlnet_group,
    diffusers_to_bfl_controlnet,
    mistoline_to_bfl_controlnet,
)
from models.formats.errors import CheckpointFormatError, WrongFamilyError
from models.formats.header import inspect_weights
from models.formats.lazy import Source, load_module

from .model import FluxControlNet
from .params import ControlNetParamsError, detect_controlnet_params

log = logging.getLogger(__name__)


def _axes_from_config(path: Path) -> tuple[int, ...] | None:
    folder = path if path.is_dir() else path.parent
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointFormatError(config, f"not valid JSON ({exc})") from None
    rope = data.get("axes_dims_rope") if isinstance(data, dict) else None
    return tuple(int(a) for a in rope) if rope else None


def load_controlnet(path: str | Path, *, compute_dtype: torch.dtype | None = None) -> FluxControlNet:
    """A `FluxControlNet` (eval, no grad) from a ControlNet file or diffusers folder.

    compute_dtype: None keeps the file's dominant dtype. Raises WrongFamilyError when the file is no
    FLUX ControlNet, CheckpointFormatError when its tensors are inconsistent (both name the file).
    """
    path = Path(path)
    info = inspect_weights(path)
    keys = list(info)
    kind = controlnet_kind(keys)
    if kind is None:
        raise WrongFamilyError(
            path,
            "a FLUX ControlNet (XLabs, Mistoline or diffusers/InstantX)",
            f"{len(keys)} tensors without controlnet_blocks.0.*",
        )
    convert = group_of = None
    axes = None
    shapes: dict[str, tuple[int, ...]] = {k: info.tensor(k).shape for k in keys}
    if kind == DIFFUSERS:
        convert, group_of = diffusers_to_bfl_controlnet, diffusers_controlnet_group
        axes = _axes_from_config(path)
    elif kind == MISTOLINE:
        convert = mistoline_to_bfl_controlnet
    if convert is not None:
        meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
        try:
            shapes = {k: tuple(v.shape) for k, v in convert(meta).items()}
        except ValueError as exc:
            raise CheckpointFormatError(path, f"not a {kind} FLUX ControlNet: {exc}") from None
    try:
        params = detect_controlnet_params(shapes, kind, axes_dim=axes)
    except ControlNetParamsError as exc:
        raise CheckpointFormatError(path, str(exc)) from None
    source = Source(info, convert=convert, group_of=group_of)
    model = load_module(lambda: FluxControlNet(params), source, compute_dtype=compute_dtype)
    log.info(
        "%s: loaded a %s FLUX ControlNet (%d double, %d single blocks%s%s)",
        path,
        kind,
        params.trunk.depth,
        params.trunk.depth_single_blocks,
        f", {params.num_modes} union modes" if params.num_modes else "",
        ", inpainting" if params.concat_mask else "",
    )
    return model
