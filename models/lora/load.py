"""Read a LoRA file and turn it into model and text-encoder patches.

`convert_lora(sd, targets)` is pure: it splits the keys by format (`detect`), runs each format's
converter, checks every patch against the shape of the tensor it names, and returns a `LoraFile`
with patches at strength 1 plus every file key that maps to nothing. `LoraFile.at(model, clip)`
re-strengthens the same patches (tensors shared), so a strength edit never re-reads the file.
`load_lora(path, targets)` reads the file (safetensors, tensors and metadata) and logs a warning
naming the unmapped keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from models.patches import WeightPatch

from .adapters import Converted
from .detect import (
    BFL_CONTROL,
    COMFYUI,
    DIFFUSERS,
    FORMATS,
    KOHYA,
    LYCORIS,
    ONETRAINER,
    XLABS,
    split_by_format,
)
from .formats.bfl_control import convert_bfl_control
from .formats.comfyui import convert_comfyui
from .formats.diffusers import convert_diffusers
from .formats.kohya import convert_kohya
from .formats.lycoris import convert_lycoris
from .formats.onetrainer import convert_onetrainer
from .formats.xlabs import convert_xlabs
from .math import PatchShapeError, apply_patch, pad_to_shape
from .targets import LoraTargets, is_text_key

log = logging.getLogger(__name__)

Converter = Callable[..., Converted]
CONVERTERS: Mapping[str, Converter] = {
    KOHYA: convert_kohya,
    ONETRAINER: convert_onetrainer,
    LYCORIS: convert_lycoris,
    DIFFUSERS: convert_diffusers,
    COMFYUI: convert_comfyui,
    XLABS: convert_xlabs,
    BFL_CONTROL: convert_bfl_control,
}
assert set(CONVERTERS) == set(FORMATS)


@dataclass(frozen=True, eq=False)
class LoraFile:
    """A converted LoRA: model patches, text-encoder ("clip_l."/"t5xxl."-keyed) patches, unmapped keys."""

    model: tuple[WeightPatch, ...]
    clip: tuple[WeightPatch, ...]
    unmapped: tuple[str, ...]
    formats: tuple[str, ...]
    source: str = ""

    def at(
        self, strength_model: float, strength_clip: float
    ) -> tuple[tuple[WeightPatch, ...], tuple[WeightPatch, ...]]:
        """(model patches, clip patches) at these strengths; the tensors are shared, not copied."""
        return (
            tuple(p.with_strength(p.strength * strength_model) for p in self.model),
            tuple(p.with_strength(p.strength * strength_clip) for p in self.clip),
        )

    def warning(self) -> str | None:
        """A user-facing line naming the unmapped keys (None when every key was used)."""
        if not self.unmapped:
            return None
        shown = ", ".join(self.unmapped[:20]) + (" ..." if len(self.unmapped) > 20 else "")
        name = f"LoRA {self.source}" if self.source else "LoRA"
        return f"{name}: {len(self.unmapped)} keys not applied (no matching weight): {shown}"


def _result_shape(patch: WeightPatch, shape: tuple[int, ...]) -> None:
    """Raise PatchShapeError when `patch` cannot apply to a tensor of `shape` (checked on meta tensors)."""
    meta = torch.empty(shape, device="meta")
    if patch.reshape is not None:
        meta = pad_to_shape(meta, patch.reshape)
    target = meta.narrow(*patch.offset) if patch.offset is not None else meta
    on_meta = WeightPatch(
        patch.key,
        patch.kind,
        tuple(t.to("meta") for t in patch.tensors),
        slots=patch.slots,
        alpha=patch.alpha,
        source=patch.source,
    )
    apply_patch(target.clone(), on_meta)


def check_shapes(
    patches: tuple[WeightPatch, ...], targets: LoraTargets
) -> tuple[list[WeightPatch], list[str]]:
    """(patches that fit their tensors, "key: reason" for those that do not or name no tensor)."""
    good: list[WeightPatch] = []
    bad: list[str] = []
    for patch in patches:
        shape = targets.shapes.get(patch.key)
        if shape is None:
            bad.append(f"{patch.key}: no such weight")
            continue
        try:
            _result_shape(patch, shape)
        except (PatchShapeError, RuntimeError, IndexError) as exc:
            bad.append(f"{patch.key}: {exc}")
            continue
        good.append(patch)
    return good, bad


def convert_lora(
    sd: Mapping[str, Tensor],
    targets: LoraTargets,
    *,
    metadata: Mapping[str, str] | None = None,
    source: str = "",
) -> LoraFile:
    """Patches (strength 1) for a LoRA state dict of any known format (see module doc)."""
    parts, unknown = split_by_format(sd)
    done = Converted(unmapped=tuple(unknown))
    for fmt, part in parts.items():
        extra = {"metadata": metadata} if fmt == DIFFUSERS else {}
        done = done + CONVERTERS[fmt](part, targets, source=source, **extra)
    good, bad = check_shapes(done.patches, targets)
    return LoraFile(
        model=tuple(p for p in good if not is_text_key(p.key)),
        clip=tuple(p for p in good if is_text_key(p.key)),
        unmapped=tuple(done.unmapped) + tuple(bad),
        formats=tuple(f for f in FORMATS if f in parts),
        source=source,
    )


def read_lora(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, safetensors metadata) of a LoRA file, on the CPU in their stored dtypes."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        metadata = dict(f.metadata() or {})
        return {k: f.get_tensor(k) for k in f.keys()}, metadata


def load_lora(path: Path | str, targets: LoraTargets) -> LoraFile:
    """Read and convert a LoRA file; unmapped keys are logged as a warning (and kept on the result)."""
    path = Path(path)
    sd, metadata = read_lora(path)
    lora = convert_lora(sd, targets, metadata=metadata, source=path.name)
    message = lora.warning()
    if message:
        log.warning(message)
    log.info(
        "LoRA %s (%s): %d model patches, %d text-encoder patches",
        path.name,
        ", ".join(lora.formats) or "no known format",
        len(lora.model),
        len(lora.clip),
    )
    return lora
