"""Load FLUX models from the files users have, whatever their layout (see `detect`).

Every loader accepts a file, a sharded index, a diffusers component folder or a diffusers pipeline
folder, and an all-in-one checkpoint (taking its part). Weights are assigned lazily
(`lazy.load_module`): one copy in memory, fp8 kept as fp8.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from .detect import AUTOENCODER, CLIP_L, DESCRIPTIONS, FLUX, T5XXL, Component, Detection, detect_path
from .diffusers_flux import diffusers_flux_group, diffusers_to_bfl_transformer
from .diffusers_vae import diffusers_to_bfl_vae
from .errors import CheckpointFormatError, WrongFamilyError
from .fp8 import weight_dtype_from_name
from .lazy import Source, load_module

if TYPE_CHECKING:  # imported lazily at run time: models.flux / models.text import this package
    from models.flux.autoencoder import AutoEncoder
    from models.flux.model import Flux
    from models.text.layouts import TextEncoderKind
    from models.text.loading import LoadedTextEncoder

log = logging.getLogger(__name__)

CHECKPOINT = "an all-in-one checkpoint (diffusion model + text encoders + VAE)"


@dataclass(frozen=True, eq=False)
class LoadedCheckpoint:
    """The parts of an all-in-one checkpoint or diffusers pipeline; absent parts are None / missing."""

    path: Path
    flux: Any  # models.flux.model.Flux
    text_encoders: Mapping[str, Any] = field(
        default_factory=dict
    )  # kind -> models.text.loading.LoadedTextEncoder
    vae: Any = None  # models.flux.autoencoder.AutoEncoder


def _require(detection: Detection, family: str, path: str | Path) -> Component:
    found = detection.get(family)
    if found is None:
        raise WrongFamilyError(path, DESCRIPTIONS[family], detection.describe())
    return found


def _meta_shapes(convert, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Shapes after a layout conversion, computed on meta tensors (no data touched)."""
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    return {k: tuple(v.shape) for k, v in convert(meta).items()}


def _component_config(component: Component) -> dict[str, Any]:
    """diffusers `config.json` beside a component's weights, or {}."""
    where = component.info.path
    folder = where if where.is_dir() else where.parent
    path = folder / "config.json"
    if component.layout != "diffusers" or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointFormatError(path, f"not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def _linear_dtype(weight_dtype: str | torch.dtype | None) -> torch.dtype | None:
    return weight_dtype if isinstance(weight_dtype, torch.dtype) else weight_dtype_from_name(weight_dtype)


# --- diffusion transformer ----------------------------------------------------------------------


def load_flux_component(
    component: Component,
    *,
    weight_dtype: str | torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
) -> Flux:
    """The FLUX transformer a detected component describes (see `load_flux_transformer`)."""
    from models.flux.model import Flux
    from models.flux.params import FluxParamsError, detect_flux_params

    path = component.info.path
    shapes = component.shapes()
    convert = group_of = None
    axes = None
    if component.layout == "diffusers":
        convert, group_of = diffusers_to_bfl_transformer, diffusers_flux_group
        try:
            shapes = _meta_shapes(convert, shapes)
        except ValueError as exc:
            raise CheckpointFormatError(path, f"not a diffusers FLUX transformer: {exc}") from None
        rope = _component_config(component).get("axes_dims_rope")
        axes = tuple(int(a) for a in rope) if rope else None
    try:
        params = detect_flux_params(shapes, prefix="", axes_dim=axes)
    except (FluxParamsError, ValueError) as exc:
        raise CheckpointFormatError(path, str(exc)) from None
    source = Source(component.info, prefix=component.prefix, convert=convert, group_of=group_of)
    model = load_module(
        lambda: Flux(params), source, compute_dtype=compute_dtype, linear_dtype=_linear_dtype(weight_dtype)
    )
    log.info("%s: loaded %s", path, component.description)
    return model


def load_flux_transformer(
    path: str | Path,
    *,
    weight_dtype: str | torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
) -> Flux:
    """A `models.flux.model.Flux` (eval, no grad) from any FLUX transformer file or folder.

    weight_dtype: storage of Linear weights: None / "default" (as stored: bf16 stays bf16, fp8 stays
        fp8), "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2" (cast on load), or a torch dtype.
    compute_dtype: dtype of everything else and of the matmuls (None: the file's dominant dtype).
    Raises WrongFamilyError (a VAE, a text encoder, ...), UnsupportedFormatError (FLUX.2, GGUF, NF4,
    pickles) or CheckpointFormatError (truncated, corrupt, inconsistent), each naming the file.
    """
    return load_flux_component(
        _require(detect_path(path), FLUX, path), weight_dtype=weight_dtype, compute_dtype=compute_dtype
    )


# --- autoencoder ---------------------------------------------------------------------------------


def load_autoencoder_component(
    component: Component, *, compute_dtype: torch.dtype | None = None
) -> AutoEncoder:
    """The FLUX VAE a detected component describes (see `load_autoencoder`)."""
    from models.flux.autoencoder import AutoEncoder, AutoEncoderParamsError, detect_autoencoder_params

    path = component.info.path
    shapes = component.shapes()
    convert = None
    factors: dict[str, float] = {}
    if component.layout == "diffusers":
        try:
            shapes = _meta_shapes(diffusers_to_bfl_vae, shapes)
        except ValueError as exc:
            raise CheckpointFormatError(path, f"not a diffusers FLUX VAE: {exc}") from None
        config = _component_config(component)
        for ours, theirs in (("scale_factor", "scaling_factor"), ("shift_factor", "shift_factor")):
            if isinstance(config.get(theirs), (int, float)):
                factors[ours] = float(config[theirs])
    try:
        params = detect_autoencoder_params(shapes, prefix="", **factors)
    except (AutoEncoderParamsError, ValueError) as exc:
        raise CheckpointFormatError(path, str(exc)) from None
    if component.layout == "diffusers":
        # renames only, so keys convert one by one; the level count must come from the whole file
        convert = partial(diffusers_to_bfl_vae, num_levels=len(params.ch_mult))
    source = Source(component.info, prefix=component.prefix, convert=convert)
    model = load_module(lambda: AutoEncoder(params), source, compute_dtype=compute_dtype)
    log.info("%s: loaded %s", path, component.description)
    return model


def load_autoencoder(path: str | Path, *, compute_dtype: torch.dtype | None = None) -> AutoEncoder:
    """A `models.flux.autoencoder.AutoEncoder` from ae.safetensors, a diffusers `vae/` folder or a
    pipeline / all-in-one checkpoint holding one. Errors as for `load_flux_transformer`."""
    return load_autoencoder_component(
        _require(detect_path(path), AUTOENCODER, path), compute_dtype=compute_dtype
    )


# --- text encoders -------------------------------------------------------------------------------


def load_text_component(
    component: Component, *, compute_dtype: torch.dtype | None = None, linear_dtype: torch.dtype | None = None
) -> LoadedTextEncoder:
    from models.text.loading import load_from_weights

    return load_from_weights(
        component.info,
        cast("TextEncoderKind", component.family),
        component.prefix,
        compute_dtype=compute_dtype,
        linear_dtype=linear_dtype,
    )


def load_text_encoder(
    path: str | Path,
    kind: str | None = None,
    *,
    compute_dtype: torch.dtype | None = None,
    linear_dtype: torch.dtype | None = None,
) -> LoadedTextEncoder:
    """A `models.text.loading.LoadedTextEncoder` (kind, module, params) from clip_l / t5xxl files,
    diffusers `text_encoder/` / `text_encoder_2/` folders, or (with `kind`) a checkpoint or pipeline.

    kind: "clip_l" or "t5xxl"; None takes the only text encoder the path holds.
    """
    detection = detect_path(path)
    texts = [c for c in detection.components if c.family in (CLIP_L, T5XXL)]
    if kind is not None:
        if kind not in (CLIP_L, T5XXL):
            raise ValueError(f"text encoder kind must be {CLIP_L!r} or {T5XXL!r}, got {kind!r}")
        component = _require(detection, kind, path)
    elif len(texts) == 1:
        component = texts[0]
    elif texts:
        raise CheckpointFormatError(
            path,
            f"holds several text encoders ({', '.join(c.family for c in texts)}); say which kind to load",
        )
    else:
        raise WrongFamilyError(path, "a CLIP-L or T5-XXL text encoder", detection.describe())
    return load_text_component(component, compute_dtype=compute_dtype, linear_dtype=linear_dtype)


# --- everything at once --------------------------------------------------------------------------


def load_checkpoint(
    path: str | Path,
    *,
    weight_dtype: str | torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
) -> LoadedCheckpoint:
    """Every part of a ComfyUI all-in-one checkpoint or diffusers pipeline folder.

    The diffusion model is required; missing text encoders or VAE are logged and left out.
    `weight_dtype` applies to the diffusion model only.
    """
    detection = detect_path(path)
    flux_part = detection.get(FLUX)
    if flux_part is None:
        raise WrongFamilyError(path, CHECKPOINT, detection.describe())
    flux = load_flux_component(flux_part, weight_dtype=weight_dtype, compute_dtype=compute_dtype)
    texts = {c.family: load_text_component(c) for c in detection.components if c.family in (CLIP_L, T5XXL)}
    vae_part = detection.get(AUTOENCODER)
    vae = load_autoencoder_component(vae_part) if vae_part is not None else None
    absent = [
        name
        for name, present in (
            ("CLIP-L", CLIP_L in texts),
            ("T5-XXL", T5XXL in texts),
            ("VAE", vae is not None),
        )
        if not present
    ]
    if absent:
        log.warning("%s: no %s in this checkpoint; load them separately", path, ", ".join(absent))
    return LoadedCheckpoint(Path(path), flux, texts, vae)
