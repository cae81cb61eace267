"""Hyper-parameters of FLUX ControlNets (XLabs, Mistoline, InstantX/diffusers) and detection from shapes.

All families share a reduced FLUX trunk (double and single blocks of the main model's width); they
differ in how the control image enters and how residuals map onto the main model's blocks:

- "xlabs": pixel hint in [0, 1] through `input_hint_block` (8x downscale), residuals repeat cyclically.
- "mistoline": as xlabs with `input_cond_block` and `controlnet_blocks.{i}.linear` (Linear + SiLU).
- "diffusers" (InstantX, Shakker Union / Union-Pro / Pro 2.0, Alimama inpainting): a VAE latent hint
  (16 channels, 17 with the inpainting mask) packed 2x2, residuals spread by the interval rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from models.flux.params import FluxParams, default_axes_dim

XLABS, MISTOLINE, DIFFUSERS = "xlabs", "mistoline", "diffusers"
KINDS = (XLABS, MISTOLINE, DIFFUSERS)
LATENT_CHANNELS = 16  # FLUX VAE latent channels (the hint of latent-input ControlNets)


class ControlNetParamsError(ValueError):
    """A state dict that is not a FLUX ControlNet in our (BFL-named) layout; names the odd key."""


@dataclass(frozen=True)
class ControlNetParams:
    """A FLUX ControlNet: its trunk (FluxParams: widths, block counts) plus how the hint enters.

    `hint_channels` counts the hint's channels before 2x2 packing: 16 for pixel-hint models (after
    `input_hint_block`), 16 for latent ControlNets, 17 for the inpainting one (latent + mask).
    `num_modes` > 0 gives a Union mode embedding with that many rows.
    """

    trunk: FluxParams
    kind: str = XLABS
    hint_channels: int = LATENT_CHANNELS
    num_modes: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ControlNet kind {self.kind!r} is not one of {KINDS}")
        if self.hint_channels < 1 or self.num_modes < 0:
            raise ValueError(f"hint_channels {self.hint_channels} / num_modes {self.num_modes} out of range")

    @property
    def latent_input(self) -> bool:
        """True when the hint is a VAE latent (needs a VAE), False for pixel hints."""
        return self.kind == DIFFUSERS

    @property
    def cyclic(self) -> bool:
        """Residuals repeat cyclically over the main blocks (XLabs) instead of by interval."""
        return self.kind != DIFFUSERS

    @property
    def concat_mask(self) -> bool:
        """The inpainting ControlNet: one mask channel follows the 16 latent channels."""
        return self.kind == DIFFUSERS and self.hint_channels == LATENT_CHANNELS + 1


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in (value.shape if hasattr(value, "shape") else value))


def _count(keys: Mapping[str, Any], name: str) -> int:
    pattern = re.compile(rf"{re.escape(name)}\.(\d+)\.")
    found = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    if found and found != set(range(len(found))):
        raise ControlNetParamsError(f"{name} indices are not contiguous from 0: {sorted(found)}")
    return len(found)


def detect_controlnet_params(
    shapes: Mapping[str, Any], kind: str, *, axes_dim: tuple[int, ...] | None = None
) -> ControlNetParams:
    """ControlNetParams from `key -> shape` of a ControlNet already in our (BFL-named) layout.

    `kind` comes from `models.formats.control_flux.controlnet_kind` on the file's own keys.
    """

    def shape(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise ControlNetParamsError(f"not a FLUX ControlNet: {key} is missing ({len(shapes)} keys)")
        return _shape(shapes[key])

    hidden, in_channels = shape("img_in.weight")
    depth = _count(shapes, "double_blocks")
    single = _count(shapes, "single_blocks")
    if depth:
        head_dim = shape("double_blocks.0.img_attn.norm.query_norm.scale")[0]
        mlp_hidden = shape("double_blocks.0.img_mlp.0.weight")[0]
    elif single:
        head_dim = shape("single_blocks.0.norm.query_norm.scale")[0]
        mlp_hidden = shape("single_blocks.0.linear1.weight")[0] - 3 * hidden
    else:
        raise ControlNetParamsError("no double_blocks.* or single_blocks.*: not a FLUX ControlNet")
    control_double = _count(shapes, "controlnet_blocks")
    control_single = _count(shapes, "controlnet_single_blocks")
    if control_double != depth or control_single != single:
        raise ControlNetParamsError(
            f"{depth} double / {single} single blocks but {control_double} controlnet_blocks / "
            f"{control_single} controlnet_single_blocks"
        )
    if hidden % head_dim:
        raise ControlNetParamsError(f"hidden size {hidden} is not a multiple of the head dim {head_dim}")
    hint_features = shape("pos_embed_input.weight")[1]
    if hint_features % 4:
        raise ControlNetParamsError(f"pos_embed_input takes {hint_features} features, not a multiple of 4")
    modes = shape("controlnet_mode_embedder.weight")[0] if "controlnet_mode_embedder.weight" in shapes else 0
    try:
        trunk = FluxParams(
            in_channels=in_channels,
            out_channels=in_channels,
            vec_in_dim=shape("vector_in.in_layer.weight")[1],
            context_in_dim=shape("txt_in.weight")[1],
            hidden_size=hidden,
            mlp_ratio=mlp_hidden / hidden,
            num_heads=hidden // head_dim,
            depth=depth,
            depth_single_blocks=single,
            axes_dim=axes_dim if axes_dim is not None else default_axes_dim(head_dim),
            qkv_bias=depth == 0 or "double_blocks.0.img_attn.qkv.bias" in shapes,
            guidance_embed="guidance_in.in_layer.weight" in shapes,
        )
        return ControlNetParams(trunk=trunk, kind=kind, hint_channels=hint_features // 4, num_modes=modes)
    except ValueError as exc:
        raise ControlNetParamsError(f"inconsistent FLUX ControlNet shapes: {exc}") from None
