"""Patched weights as files store them: what CheckpointSave / ModelSave write.

`baked_state(tensors, patches)` applies each key's patches with `patched_weight` (float32) and casts
back to the stored dtype; untouched tensors are passed through. `checkpoint_state` lays the parts
out as a ComfyUI all-in-one checkpoint (flux-formats reference §2.3): `model.diffusion_model.` + BFL
keys, `text_encoders.clip_l.transformer.` / `text_encoders.t5xxl.transformer.` + HF file keys,
`vae.` + autoencoder keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from models.patches import WeightPatch

from .math import patched_weight
from .targets import CLIP_PREFIX, T5_PREFIX

MODEL_PREFIX = "model.diffusion_model."
CLIP_FILE_PREFIX = "text_encoders.clip_l.transformer."
T5_FILE_PREFIX = "text_encoders.t5xxl.transformer."
VAE_PREFIX = "vae."


def group(patches: Sequence[WeightPatch], prefix: str = "") -> dict[str, list[WeightPatch]]:
    """key (with `prefix` removed) -> its patches in order, for the patches whose key has `prefix`."""
    out: dict[str, list[WeightPatch]] = {}
    for patch in patches:
        if patch.key.startswith(prefix):
            out.setdefault(patch.key[len(prefix) :], []).append(patch)
    return out


def baked_state(
    tensors: Mapping[str, Tensor], patches: Mapping[str, Sequence[WeightPatch]]
) -> dict[str, Tensor]:
    """Every tensor with its patches applied, in its stored dtype, on the CPU, contiguous."""
    out: dict[str, Tensor] = {}
    for key, value in tensors.items():
        mine = patches.get(key)
        if mine:
            value = patched_weight(value, mine).to(value.dtype)
        out[key] = value.detach().to("cpu").contiguous()
    return out


def clip_file_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A CLIPTextModel state dict under the file keys (`text_model.*`, no position_ids buffer)."""
    return {
        (k if k.startswith("text_model.") else "text_model." + k): v
        for k, v in state.items()
        if not k.endswith("position_ids")
    }


def t5_file_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A T5EncoderModel state dict under the file keys (the tied `encoder.embed_tokens` copy dropped)."""
    return {k: v for k, v in state.items() if k != "encoder.embed_tokens.weight"}


def _prefixed(prefix: str, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {prefix + k: v for k, v in state.items()}


def checkpoint_state(
    model: tuple[Mapping[str, Tensor], Sequence[WeightPatch]] | None = None,
    clip: tuple[Mapping[str, Tensor], Sequence[WeightPatch]] | None = None,
    t5: tuple[Mapping[str, Tensor], Sequence[WeightPatch]] | None = None,
    vae: tuple[Mapping[str, Tensor], Sequence[WeightPatch]] | None = None,
) -> dict[str, Tensor]:
    """An all-in-one checkpoint from (base tensors, patches) per part; text-encoder patch keys keep their
    "clip_l." / "t5xxl." prefixes."""
    out: dict[str, Tensor] = {}
    if model is not None:
        out |= _prefixed(MODEL_PREFIX, baked_state(model[0], group(model[1])))
    if clip is not None:
        out |= _prefixed(CLIP_FILE_PREFIX, clip_file_keys(baked_state(clip[0], group(clip[1], CLIP_PREFIX))))
    if t5 is not None:
        out |= _prefixed(T5_FILE_PREFIX, t5_file_keys(baked_state(t5[0], group(t5[1], T5_PREFIX))))
    if vae is not None:
        out |= _prefixed(VAE_PREFIX, baked_state(vae[0], group(vae[1])))
    return out


def unshared(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Copies for tensors that share storage with an earlier one (safetensors refuses aliases)."""
    seen: set[int] = set()
    out: dict[str, Tensor] = {}
    for key, t in state.items():
        ident = t.untyped_storage().data_ptr() if t.numel() else id(t)
        out[key] = t.clone() if ident in seen else t
        seen.add(ident)
    return out
