"""Where text-encoder tensors sit in the files users have, and how their keys map to our modules.

Layouts (flux-formats.md §2.3, §5):
- ComfyUI `clip_l.safetensors`, diffusers `text_encoder/`: HF CLIPTextModel keys `text_model.*`, plus
  extras we drop (`text_projection.weight`, `logit_scale`, `text_model.embeddings.position_ids`).
- ComfyUI `t5xxl_fp16.safetensors` / `t5xxl_fp8_e4m3fn.safetensors`, diffusers `text_encoder_2/`
  (possibly sharded): HF T5EncoderModel keys `shared.weight`, `encoder.*`; sometimes a tied copy
  `encoder.embed_tokens.weight`; fp8 files may add a `scaled_fp8` marker and `.scale_weight` /
  `.scale_input` scalars (handled by `models.formats`).
- ComfyUI all-in-one checkpoints: the same keys under `text_encoders.{clip_l,t5xxl}.transformer.`
  (older saves: `cond_stage_model.{clip_l,t5xxl}.transformer.`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from .clip import FILE_PREFIX

log = logging.getLogger(__name__)

TextEncoderKind = Literal["clip_l", "t5xxl"]
KINDS: tuple[TextEncoderKind, ...] = ("clip_l", "t5xxl")
CHECKPOINT_PREFIXES: Mapping[TextEncoderKind, tuple[str, ...]] = {
    "clip_l": ("text_encoders.clip_l.transformer.", "cond_stage_model.clip_l.transformer."),
    "t5xxl": ("text_encoders.t5xxl.transformer.", "cond_stage_model.t5xxl.transformer."),
}
CLIP_MARKERS = (
    "embeddings.token_embedding.weight",
    "final_layer_norm.weight",
    "encoder.layers.0.mlp.fc1.weight",
)
T5_MARKERS = (
    "encoder.block.0.layer.0.SelfAttention.q.weight",
    "encoder.final_layer_norm.weight",
    "encoder.block.0.layer.1.DenseReluDense.wi_0.weight",
)
# CLIP text towers of other families: OpenCLIP ViT-H (SD2) and ViT-bigG (SDXL/SD3 clip_g).
OTHER_CLIP_WIDTHS = frozenset({1024, 1280})
FP8_EXTRAS = re.compile(r"(^|\.)(scaled_fp8|scale_weight|scale_input)$")
_T5_IGNORED = ("decoder.", "lm_head.")


@dataclass(frozen=True)
class KeyLayout:
    """How to read one encoder out of a file: strip `prefix`, skip local keys in `drop`, rename per `rename`."""

    kind: TextEncoderKind
    prefix: str
    drop: frozenset[str] = frozenset()
    rename: Mapping[str, str] | None = None

    def local_keys(self, keys: Iterable[str]) -> list[str]:
        """Keys under `prefix` (prefix removed) that the module takes, before renaming."""
        out = []
        for key in keys:
            if key.startswith(self.prefix):
                local = key[len(self.prefix) :]
                if local not in self.drop:
                    out.append(local)
        return out


def _clip_stripped(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    return {k.removeprefix(FILE_PREFIX): v for k, v in shapes.items()}


def detect_text_encoder(shapes: Mapping[str, tuple[int, ...]]) -> TextEncoderKind | None:
    """Which FLUX text encoder a state dict holds (checkpoint prefix already stripped): kind or None.

    CLIP: a CLIP text tower (`text_model.*`, or flattened) that is not OpenCLIP H/bigG by width.
    T5: a gated (v1.1) T5 encoder with relative attention bias in block 0 only (UMT5 has it in
    every block). Tiny random-weight files of either family are detected too.
    """
    stripped = _clip_stripped(shapes)
    if all(k in stripped for k in CLIP_MARKERS):
        width = stripped["embeddings.token_embedding.weight"][-1]
        if width in OTHER_CLIP_WIDTHS:
            log.debug("CLIP text tower of width %d is not CLIP-L", width)
            return None
        return "clip_l"
    if all(k in shapes for k in T5_MARKERS) and (
        "shared.weight" in shapes or "encoder.embed_tokens.weight" in shapes
    ):
        if "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in shapes:
            log.debug("T5 encoder with per-block relative attention (UMT5) is not T5-XXL v1.1")
            return None
        return "t5xxl"
    return None


def find_text_encoders(keys: Iterable[str]) -> dict[TextEncoderKind, str]:
    """Checkpoint prefixes of the text encoders inside an all-in-one file: kind -> prefix."""
    keys = list(keys)
    found: dict[TextEncoderKind, str] = {}
    for kind, prefixes in CHECKPOINT_PREFIXES.items():
        for prefix in prefixes:
            sub = {k[len(prefix) :]: () for k in keys if k.startswith(prefix)}
            if sub and _has_markers(kind, sub):
                found[kind] = prefix
                break
    return found


def _has_markers(kind: TextEncoderKind, keys: Mapping[str, object]) -> bool:
    if kind == "clip_l":
        return all(k in keys or FILE_PREFIX + k in keys for k in CLIP_MARKERS)
    return all(k in keys for k in T5_MARKERS)


def strip_prefix(
    shapes: Mapping[str, tuple[int, ...]], kind: TextEncoderKind | None = None
) -> tuple[str, dict[str, tuple[int, ...]]]:
    """(prefix, shapes under it) for the encoder of a file: bare keys, or under a checkpoint prefix.

    A file with several prefixed encoders (an all-in-one checkpoint) needs `kind` to pick one.
    """
    found = find_text_encoders(shapes)
    if kind is not None and kind in found:
        prefix = found[kind]
    elif len(found) == 1 and kind is None:
        prefix = next(iter(found.values()))
    elif len(found) > 1:
        raise ValueError(f"holds several text encoders ({', '.join(found)}); choose one")
    else:
        return "", dict(shapes)
    return prefix, {k[len(prefix) :]: v for k, v in shapes.items() if k.startswith(prefix)}


def layout_for(
    kind: TextEncoderKind, keys: Iterable[str], *, outer: str = "", nested_module: bool = False
) -> KeyLayout:
    """The KeyLayout reading `kind` from a file whose keys are `keys`, under checkpoint prefix `outer`.

    `nested_module`: the CLIP module keeps `text_model.` in its own keys (transformers 4; 5 flattened it).
    """
    local = {k[len(outer) :] for k in keys if k.startswith(outer)}
    if kind == "clip_l":
        nested_file = any(k.startswith(FILE_PREFIX) for k in local)
        if nested_file and not nested_module:  # the usual case: the extras sit outside the prefix
            return KeyLayout(kind, outer + FILE_PREFIX, drop=frozenset({"embeddings.position_ids"}))
        inner = FILE_PREFIX if nested_file else ""
        drop = frozenset({"text_projection.weight", "logit_scale", inner + "embeddings.position_ids"})
        rename = (
            {k: FILE_PREFIX + k for k in local if k not in drop}
            if nested_module and not nested_file
            else None
        )
        return KeyLayout(kind, outer, drop=drop, rename=rename)
    t5_drop = {k for k in local if k.startswith(_T5_IGNORED)}
    if "shared.weight" in local:
        t5_drop.add("encoder.embed_tokens.weight")  # a tied copy; the module ties it back to shared
        return KeyLayout(kind, outer, drop=frozenset(t5_drop))
    return KeyLayout(
        kind, outer, drop=frozenset(t5_drop), rename={"encoder.embed_tokens.weight": "shared.weight"}
    )


def convert_state_dict(layout: KeyLayout, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pure dict -> dict: the tensors of `layout.kind` under our module's keys (no copies)."""
    local = layout.local_keys(state_dict)
    scaled = [k for k in local if FP8_EXTRAS.search(k)]
    if scaled:
        raise ValueError(
            f"scaled-fp8 tensors ({scaled[:3]}) need the file loader "
            f"(models.text.loading.load_text_encoder_file), which keeps fp8 storage and scales"
        )
    rename = layout.rename or {}
    return {rename.get(k, k): state_dict[layout.prefix + k] for k in local}
