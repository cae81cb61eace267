"""Load CLIP-L / T5-XXL from the files users have: meta-device build, weights assigned, one copy.

Files go through `models.formats` (header inspection, lazy reads, fp8 kept as storage with
per-call upcast, ComfyUI scaled-fp8 scales); in-memory state dicts through `load_state_dict_encoder`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.formats.errors import CheckpointFormatError, WrongFamilyError
from models.formats.header import WeightsInfo, inspect_weights
from models.formats.lazy import Source, load_module

from . import clip, t5
from .clip import ClipTextParams
from .encode import TextEncoders
from .layouts import (
    KeyLayout,
    TextEncoderKind,
    convert_state_dict,
    detect_text_encoder,
    find_text_encoders,
    layout_for,
    strip_prefix,
)
from .t5 import T5EncoderParams

log = logging.getLogger(__name__)

EXPECTED = "a CLIP-L or T5-XXL v1.1 text encoder"


@dataclass(frozen=True, eq=False)
class LoadedTextEncoder:
    """A text encoder module (eval, no grad) with its kind and hyper-parameters."""

    kind: TextEncoderKind
    module: nn.Module
    params: ClipTextParams | T5EncoderParams


def params_from_shapes(
    kind: TextEncoderKind, shapes: Mapping[str, tuple[int, ...]]
) -> ClipTextParams | T5EncoderParams:
    """Hyper-parameters of a `kind` encoder from its (prefix-stripped) shapes."""
    return clip.clip_params_from_shapes(shapes) if kind == "clip_l" else t5.t5_params_from_shapes(shapes)


def build_meta(kind: TextEncoderKind, params: ClipTextParams | T5EncoderParams) -> nn.Module:
    """An empty (meta-device) module of `kind` for `params`."""
    with torch.device("meta"):
        return clip.build_clip(params) if kind == "clip_l" else t5.build_t5(params)  # type: ignore[arg-type]


def _finish(kind: TextEncoderKind, module: nn.Module) -> None:
    if kind == "clip_l":
        clip.materialize_buffers(module)
    else:
        t5.tie_embeddings(module)


def _layout(
    kind: TextEncoderKind, keys: Iterable[str], outer: str, params: ClipTextParams | T5EncoderParams
) -> tuple[KeyLayout, nn.Module]:
    module = build_meta(kind, params)
    return layout_for(kind, keys, outer=outer, nested_module=clip.is_nested(module)), module


def load_from_weights(
    info: WeightsInfo,
    kind: TextEncoderKind,
    prefix: str = "",
    *,
    compute_dtype: torch.dtype | None = None,
    linear_dtype: torch.dtype | None = None,
) -> LoadedTextEncoder:
    """Load the `kind` encoder stored under `prefix` of an inspected checkpoint.

    compute_dtype: dtype of non-Linear tensors and of Linear compute (None: the file's dominant dtype);
    linear_dtype: storage dtype for Linear weights (None: as stored; fp8 stays fp8).
    """
    shapes = {k[len(prefix) :]: v for k, v in info.shapes.items() if k.startswith(prefix)}
    try:
        params = params_from_shapes(kind, shapes)
    except ValueError as exc:
        raise CheckpointFormatError(info.path, f"{kind} under {prefix!r}: {exc}") from None
    layout, module = _layout(kind, info, prefix, params)
    rename = layout.rename

    def convert(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {rename.get(k, k): v for k, v in tensors.items()} if rename else tensors

    source = Source(
        info,
        prefix=layout.prefix,
        convert=convert if rename else None,
        ignore=lambda local: local in layout.drop,
    )
    loaded = load_module(
        lambda: module,
        source,
        compute_dtype=compute_dtype,
        linear_dtype=linear_dtype,
        materialize=lambda m: _finish(kind, m),
    )
    log.info("%s: loaded %s (%d layers, width %d)", info.path, kind, params.num_layers, params.width)
    return LoadedTextEncoder(kind, loaded, params)


def load_text_encoder_file(
    path: str | Path, *, compute_dtype: torch.dtype | None = None, linear_dtype: torch.dtype | None = None
) -> LoadedTextEncoder:
    """Load a standalone text encoder: `clip_l.safetensors`, `t5xxl_*.safetensors`, a diffusers
    `text_encoder/` or `text_encoder_2/` folder (sharded or not), or a file with one checkpoint prefix.

    Raises WrongFamilyError when the file holds no CLIP-L / T5 encoder, CheckpointFormatError for a
    broken file.
    """
    info = inspect_weights(path)
    try:
        prefix, shapes = strip_prefix(info.shapes)
    except ValueError as exc:
        raise CheckpointFormatError(
            info.path, f"{exc} (load_checkpoint_text_encoders loads them all)"
        ) from None
    kind = detect_text_encoder(shapes)
    if kind is None:
        raise WrongFamilyError(info.path, EXPECTED, _describe(shapes))
    return load_from_weights(info, kind, prefix, compute_dtype=compute_dtype, linear_dtype=linear_dtype)


def load_checkpoint_text_encoders(
    path: str | Path | WeightsInfo,
    *,
    compute_dtype: torch.dtype | None = None,
    linear_dtype: torch.dtype | None = None,
) -> dict[TextEncoderKind, LoadedTextEncoder]:
    """The text encoders inside a ComfyUI all-in-one checkpoint (kind -> encoder); {} when it has none."""
    info = path if isinstance(path, WeightsInfo) else inspect_weights(path)
    return {
        kind: load_from_weights(info, kind, prefix, compute_dtype=compute_dtype, linear_dtype=linear_dtype)
        for kind, prefix in find_text_encoders(info).items()
    }


def load_state_dict_encoder(
    state_dict: Mapping[str, torch.Tensor],
    *,
    kind: TextEncoderKind | None = None,
    dtype: torch.dtype | None = None,
) -> LoadedTextEncoder:
    """Build the encoder an in-memory state dict (any layout above) holds, assigning its tensors.

    kind: which one to take from an all-in-one dict; dtype: cast floating tensors to it (None: keep).
    Scaled-fp8 dicts must go through the file loader.
    """
    prefix, shapes = strip_prefix({k: tuple(v.shape) for k, v in state_dict.items()}, kind)
    detected = detect_text_encoder(shapes)
    if detected is None or (kind is not None and kind != detected):
        raise ValueError(f"state dict holds no {kind or 'CLIP-L / T5'} text encoder ({_describe(shapes)})")
    kind = detected
    params = params_from_shapes(kind, shapes)
    layout, module = _layout(kind, state_dict, prefix, params)
    tensors = convert_state_dict(layout, state_dict)
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    result = module.load_state_dict(tensors, strict=False, assign=True)
    if result.unexpected_keys:
        raise ValueError(
            f"{kind}: tensors the model does not have, e.g. {sorted(result.unexpected_keys)[:5]}"
        )
    _finish(kind, module)
    missing = [n for n, p in [*module.named_parameters(), *module.named_buffers()] if p.is_meta]
    if missing:
        raise ValueError(f"{kind}: {len(missing)} tensors missing from the state dict, e.g. {missing[:5]}")
    return LoadedTextEncoder(kind, module.eval().requires_grad_(False), params)


def assemble(encoders: Iterable[LoadedTextEncoder], clip_tokenizer: Any, t5_tokenizer: Any) -> TextEncoders:
    """A TextEncoders handle from loaded encoders (at most one per kind) and the two tokenizers.

    Raises ValueError when a kind appears twice or a tokenizer has ids the model's vocabulary lacks
    (e.g. a tiny random-weight encoder with the real 49408-id CLIP tokenizer).
    """
    by_kind: dict[str, LoadedTextEncoder] = {}
    for enc in encoders:
        if enc.kind in by_kind:
            raise ValueError(f"two {enc.kind} text encoders given; FLUX takes one CLIP-L and one T5")
        by_kind[enc.kind] = enc
    for kind, tokenizer in (("clip_l", clip_tokenizer), ("t5xxl", t5_tokenizer)):
        loaded = by_kind.get(kind)
        if loaded is not None and tokenizer is not None and len(tokenizer) > loaded.params.vocab_size:
            raise ValueError(
                f"the {kind} tokenizer ({tokenizer.name_or_path or 'in memory'}) has {len(tokenizer)} ids but "
                f"the model's vocabulary has {loaded.params.vocab_size}; use the tokenizer made for this model"
            )
    clip_enc, t5_enc = by_kind.get("clip_l"), by_kind.get("t5xxl")
    return TextEncoders(
        clip=clip_enc.module if clip_enc else None,
        t5=t5_enc.module if t5_enc else None,
        clip_tokenizer=clip_tokenizer,
        t5_tokenizer=t5_tokenizer,
    )


def load_diffusers_text_encoders(
    root: str | Path, *, models_dir: Path | None = None, compute_dtype: torch.dtype | None = None
) -> TextEncoders:
    """CLIP-L + T5 + tokenizers of a diffusers FLUX folder (`text_encoder/`, `text_encoder_2/`,
    `tokenizer/`, `tokenizer_2/`); tokenizers missing there come from `<models_dir>/tokenizers/`.
    """
    from .tokenizers import load_flux_tokenizers

    root = Path(root)
    encoders = [
        load_text_encoder_file(root / sub, compute_dtype=compute_dtype)
        for sub in ("text_encoder", "text_encoder_2")
    ]
    return assemble(encoders, *load_flux_tokenizers(models_dir, diffusers_dir=root))


def _describe(shapes: Mapping[str, tuple[int, ...]]) -> str:
    keys = sorted(shapes)
    return f"{len(keys)} tensors, e.g. {keys[:3]}" if keys else "no tensors"
