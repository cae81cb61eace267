"""Say what a checkpoint file or folder holds, from its header alone.

Families: "flux" (diffusion transformer), "autoencoder" (the 16-channel FLUX VAE), "clip_l", "t5xxl".
Layouts: "bfl" (BFL / ComfyUI names), "diffusers", "hf" (transformers names for text encoders).
A file may hold several components under key prefixes (ComfyUI all-in-one checkpoints); a diffusers
pipeline folder holds one per subfolder. The transformer and VAE are found by marker keys (so any
prefix works); text encoders by `models.text.layouts` (checkpoint prefixes, or a bare file).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointFormatError, UnsupportedFormatError
from .header import WeightsInfo, inspect_weights

log = logging.getLogger(__name__)

FLUX, AUTOENCODER, CLIP_L, T5XXL = "flux", "autoencoder", "clip_l", "t5xxl"
DESCRIPTIONS: Mapping[str, str] = {
    FLUX: "a FLUX.1 diffusion model",
    AUTOENCODER: "a FLUX.1 VAE",
    CLIP_L: "a CLIP-L text encoder",
    T5XXL: "a T5-XXL text encoder",
}

# (family, layout, marker key suffix); the prefix is whatever precedes the marker
_MARKERS: tuple[tuple[str, str, str], ...] = (
    (FLUX, "bfl", "double_blocks.0.img_attn.norm.key_norm.scale"),
    (FLUX, "diffusers", "transformer_blocks.0.attn.norm_added_k.weight"),
    (AUTOENCODER, "bfl", "decoder.mid.block_1.conv1.weight"),
    (AUTOENCODER, "diffusers", "decoder.mid_block.resnets.0.conv1.weight"),
)  # text encoders are found by models.text.layouts
# marker suffix -> why it is refused (checked on every prefix)
_UNSUPPORTED: tuple[tuple[str, str], ...] = (
    ("double_stream_modulation_img.lin.weight", "a FLUX.2 diffusion model (not supported yet)"),
    ("distilled_guidance_layer.in_proj.weight", "a Chroma diffusion model (not supported)"),
    ("quant_state.bitsandbytes__nf4", "a bitsandbytes NF4 checkpoint (not supported; use fp8 or bf16)"),
    ("mlp_fc1.qweight", "a Nunchaku SVDQuant checkpoint (not supported)"),
)


@dataclass(frozen=True)
class Component:
    """One model inside a checkpoint: its family, key layout, key prefix and the weights that hold it."""

    family: str
    layout: str
    prefix: str
    info: WeightsInfo
    fp8: str | None = None  # "float8_e4m3fn" / "float8_e5m2" when its large weights are stored in fp8
    scaled_fp8: bool = False

    @property
    def description(self) -> str:
        quant = f", {self.fp8}{' scaled' if self.scaled_fp8 else ''}" if self.fp8 else ""
        where = f" under {self.prefix!r}" if self.prefix else ""
        return f"{DESCRIPTIONS[self.family]} ({self.layout} layout{quant}){where}"

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of this component's tensors, prefix stripped."""
        n = len(self.prefix)
        return {k[n:]: self.info.tensor(k).shape for k in self.info if k.startswith(self.prefix)}


@dataclass(frozen=True)
class Detection:
    """Everything found in one file or folder."""

    path: Path
    components: tuple[Component, ...]

    def get(self, family: str) -> Component | None:
        return next((c for c in self.components if c.family == family), None)

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(c.family for c in self.components)

    @property
    def is_checkpoint(self) -> bool:
        """Holds a diffusion model and at least one other component (CheckpointLoaderSimple's input)."""
        return FLUX in self.families and len(self.components) > 1

    def describe(self) -> str:
        if not self.components:
            return "no FLUX model, VAE or text encoder"
        return " + ".join(c.description for c in self.components)


def detect_weights(info: WeightsInfo) -> Detection:
    """Find every component in one (possibly sharded) checkpoint."""
    keys = list(info)
    for suffix, what in _UNSUPPORTED:
        if any(k.endswith(suffix) for k in keys):
            raise UnsupportedFormatError(info.path, f"this is {what}")
    found: list[Component] = []
    for family, layout, marker in _MARKERS:
        prefixes = sorted({k[: -len(marker)] for k in keys if k.endswith(marker)}, key=len)
        for prefix in prefixes:
            if prefix and not prefix.endswith("."):
                continue
            found.append(_component(info, family, layout, prefix))
            break
    found.extend(_component(info, kind, "hf", prefix) for kind, prefix in _text_encoders(info).items())
    return Detection(info.path, tuple(found))


def _text_encoders(info: WeightsInfo) -> dict[str, str]:
    from models.text.layouts import detect_text_encoder, find_text_encoders

    found: dict[str, str] = {kind: prefix for kind, prefix in find_text_encoders(info).items()}
    if not found:
        kind = detect_text_encoder(info.shapes)
        if kind is not None:
            found[kind] = ""
    return found


def _component(info: WeightsInfo, family: str, layout: str, prefix: str) -> Component:
    fp8_bytes: dict[str, int] = {}
    total = 0
    scaled = (prefix + "scaled_fp8") in info
    for key in info:
        if not key.startswith(prefix):
            continue
        t = info.tensor(key)
        total += t.nbytes
        if t.is_fp8 and not key.endswith("scaled_fp8"):
            name = "float8_e4m3fn" if t.dtype == "F8_E4M3" else "float8_e5m2"
            fp8_bytes[name] = fp8_bytes.get(name, 0) + t.nbytes
    fp8 = max(fp8_bytes, key=lambda n: fp8_bytes[n]) if fp8_bytes else None
    if family == AUTOENCODER:
        _check_flux_vae(info, layout, prefix)
    return Component(family, layout, prefix, info, fp8, scaled)


def _check_flux_vae(info: WeightsInfo, layout: str, prefix: str) -> None:
    key = prefix + "decoder.conv_in.weight"
    if key in info:
        z = info.tensor(key).shape[1]
        if z != 16:
            hint = " (SD1/SDXL)" if z == 4 else " (FLUX.2)" if z == 32 else ""
            raise UnsupportedFormatError(info.path, f"VAE has {z} latent channels{hint}; FLUX.1 needs 16")


def detect_path(path: str | Path) -> Detection:
    """Detect a .safetensors file, a sharded index, a diffusers component folder or a pipeline folder."""
    path = Path(path)
    if path.is_dir() and (path / "model_index.json").is_file():
        return _detect_pipeline(path)
    return detect_weights(inspect_weights(path))


# diffusers pipeline subfolder -> family it must hold
PIPELINE_PARTS: Mapping[str, str] = {
    "transformer": FLUX,
    "vae": AUTOENCODER,
    "text_encoder": CLIP_L,
    "text_encoder_2": T5XXL,
}


def _detect_pipeline(folder: Path) -> Detection:
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointFormatError(folder / "model_index.json", f"not valid JSON ({exc})") from None
    if not isinstance(index, dict):
        raise CheckpointFormatError(folder / "model_index.json", "expected a JSON object")
    pipeline = str(index.get("_class_name", ""))
    if pipeline and "Flux" not in pipeline:
        raise UnsupportedFormatError(folder, f"diffusers pipeline {pipeline} is not a FLUX.1 pipeline")
    components: list[Component] = []
    for sub, family in PIPELINE_PARTS.items():
        if sub not in index or not (folder / sub).is_dir():
            continue
        found = detect_weights(inspect_weights(folder / sub)).get(family)
        if found is None:
            raise CheckpointFormatError(folder / sub, f"expected {DESCRIPTIONS[family]}, found none")
        components.append(found)
    return Detection(folder, tuple(components))
