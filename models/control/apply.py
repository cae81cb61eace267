"""ControlNets at sampling time: the CONTROL_NET value, its application to a conditioning, hint
preparation, and the residuals a chain of applications adds to the FLUX transformer's blocks.

ComfyUI semantics (flux-formats §8.3): an application is active while
`sigma(end_percent) <= sigma <= sigma(start_percent)`; every residual is multiplied by its
application's strength once; chained applications (`previous`) add their residuals block by block.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from models.flux.extensions import FluxExtensions
from models.flux.latent_format import FLUX1_LATENT
from models.flux.packing import make_image_ids, make_text_ids, pack_latents
from models.imaging.resize import resize

from .model import FluxControlNet, spread
from .params import ControlNetParams

Encode = Callable[[Tensor], Tensor]
"""`(pixels [B, 3, H, W] in 0..1) -> un-scaled VAE latent [B, 16, H/8, W/8]` (a VAE encode)."""

HINT_RESIZE = "nearest-exact"  # ComfyUI's ControlNet upscale algorithm, center crop


@dataclass(frozen=True, eq=False)
class ControlNetHandle:
    """CONTROL_NET: a loaded ControlNet (shared module) plus per-handle options; clone is cheap.

    `control_type` holds the Union mode indices set by SetUnionControlNetType (() = none / auto).
    """

    module: FluxControlNet
    source: Path | None = None
    control_type: tuple[int, ...] = ()

    @property
    def params(self) -> ControlNetParams:
        return self.module.params

    def with_control_type(self, types: Sequence[int]) -> ControlNetHandle:
        return dataclasses.replace(self, control_type=tuple(int(t) for t in types))


@dataclass(frozen=True, eq=False)
class ControlApplication:
    """One ControlNet applied to a conditioning (the `control` entry of its dict).

    image: the hint [B, C, H, W] in 0..1 at any size (resized to the latent at sampling time).
    vae: the VAE handle latent-input ControlNets encode the hint with (None for pixel hints).
    extra_concat: channels appended to the encoded hint (the inpainting mask [B, 1, H, W]).
    previous: the application this one was chained onto (residuals are summed).
    """

    control_net: ControlNetHandle
    image: Tensor
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    vae: Any = None
    extra_concat: tuple[Tensor, ...] = ()
    previous: ControlApplication | None = None

    def __post_init__(self) -> None:
        if self.image.ndim != 4:
            raise ValueError(f"a control hint must be [B, C, H, W], got shape {tuple(self.image.shape)}")

    def chain(self) -> tuple[ControlApplication, ...]:
        """Every application in the chain, oldest first (this one last)."""
        out: list[ControlApplication] = []
        node: ControlApplication | None = self
        while node is not None:
            out.append(node)
            node = node.previous
        return tuple(reversed(out))

    def modules(self) -> tuple[FluxControlNet, ...]:
        """The ControlNet modules of the chain (each once), for the memory manager."""
        seen: dict[int, FluxControlNet] = {}
        for app in self.chain():
            seen.setdefault(id(app.control_net.module), app.control_net.module)
        return tuple(seen.values())


def _pad_even(x: Tensor) -> Tensor:
    pad_h, pad_w = x.shape[-2] % 2, x.shape[-1] % 2
    return F.pad(x, (0, pad_w, 0, pad_h), mode="circular") if pad_h or pad_w else x


def _to_batch(t: Tensor, batch: int) -> Tensor:
    if t.shape[0] == batch:
        return t
    reps = -(-batch // t.shape[0])
    return t.repeat(reps, *([1] * (t.ndim - 1)))[:batch]


@dataclass(frozen=True, eq=False)
class PreparedControl:
    """One application with its hint as packed tokens [B_hint, L, hint_channels * 4] for one latent size."""

    application: ControlApplication
    tokens: Tensor
    sigma_start: float
    sigma_end: float

    def active(self, sigma: float) -> bool:
        return self.sigma_end <= sigma <= self.sigma_start


def hint_pixels(app: ControlApplication, height: int, width: int) -> Tensor:
    """The hint image resized (nearest-exact, center crop) to 8x a height x width latent: [B, 3, 8h, 8w] in 0..1."""
    image = app.image.float()
    if image.shape[1] not in (1, 3, 4):
        raise ValueError(f"a control hint needs 1, 3 or 4 channels, got {image.shape[1]}")
    image = image[:, :3] if image.shape[1] > 1 else image.expand(-1, 3, -1, -1)
    return resize(image, width * 8, height * 8, HINT_RESIZE, "center")


def prepare_hint(
    app: ControlApplication,
    height: int,
    width: int,
    *,
    encode: Encode | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """The hint of `app` as packed tokens for a latent of height x width (latent pixels).

    Pixel hints are resized (nearest-exact, center crop) to 8x the latent and run through the hint
    encoder; latent hints are resized likewise, VAE-encoded (`encode`), taken into model space, and
    get the extra channels (mask) resized to the latent.
    """
    cn = app.control_net
    module = cn.module
    pixels = hint_pixels(app, height, width)
    dtype = module.pos_embed_input.weight.dtype
    if not cn.params.latent_input:
        with torch.no_grad():
            return module.hint_tokens(_pad_even_pixels(pixels).to(device=device, dtype=dtype))
    if encode is None:
        raise ValueError(
            f"the ControlNet {cn.source.name if cn.source else ''} needs a VAE but none was provided: "
            "use a ControlNet apply node with a VAE input and connect it"
        )
    latent = FLUX1_LATENT.process_in(encode(pixels).float().cpu())
    parts = [latent]
    extras = app.extra_concat
    if cn.params.concat_mask and not extras:  # no mask given: keep everything (ComfyUI's all-ones default)
        extras = (torch.ones(1, 1, 1, 1),)
    for extra in extras:
        extra = (
            extra.float().reshape(-1, *extra.shape[-3:])
            if extra.ndim >= 3
            else extra.float().reshape(1, 1, *extra.shape[-2:])
        )
        extra = resize(extra, latent.shape[-1], latent.shape[-2], HINT_RESIZE, "center")
        parts.append(_to_batch(extra, latent.shape[0]))
    hint = torch.cat(parts, dim=1)
    if hint.shape[1] != cn.params.hint_channels:
        raise ValueError(f"the ControlNet takes {cn.params.hint_channels} hint channels, got {hint.shape[1]}")
    return pack_latents(_pad_even(hint)).to(device=device, dtype=dtype)


def _pad_even_pixels(pixels: Tensor) -> Tensor:
    """Pixel hints of odd latent sizes: pad by 8 pixels so the encoded hint packs like the padded latent."""
    h, w = pixels.shape[-2] // 8, pixels.shape[-1] // 8
    if h % 2 == 0 and w % 2 == 0:
        return pixels
    return F.pad(pixels, (0, 8 * (w % 2), 0, 8 * (h % 2)), mode="replicate")


def prepare_controls(
    app: ControlApplication,
    height: int,
    width: int,
    *,
    percent_to_sigma: Callable[[float], float],
    encoder: Callable[[ControlApplication], Encode | None] | None = None,
    device: torch.device | None = None,
) -> tuple[PreparedControl, ...]:
    """Every application of the chain with its hint tokens ready (once per sampling run);
    `encoder(application)` gives the VAE encode of a latent-input application's hint."""
    return tuple(
        PreparedControl(
            a,
            prepare_hint(a, height, width, encode=encoder(a) if encoder else None, device=device),
            percent_to_sigma(a.start_percent),
            percent_to_sigma(a.end_percent),
        )
        for a in app.chain()
    )


@dataclass(frozen=True, eq=False)
class ControlInputs:
    """What every ControlNet in a chain sees at one model call (the main model's own inputs).

    x: [B, 16, h, w] model-space latent; t: [B] flow time; context [B, T, D]; pooled [B, vec];
    guidance [B] or None.
    """

    x: Tensor
    t: Tensor
    context: Tensor
    pooled: Tensor
    guidance: Tensor | None


def control_residuals(
    controls: Sequence[PreparedControl],
    inputs: ControlInputs,
    sigma: float,
    *,
    depth: int,
    depth_single: int,
) -> tuple[tuple[Tensor | None, ...], tuple[Tensor | None, ...]] | None:
    """Summed, strength-scaled residuals of the active controls, one per main double / single block.

    None when no control is active at `sigma` (or every active one has strength 0).
    """
    active = [c for c in controls if c.active(sigma) and c.application.strength != 0]
    if not active:
        return None
    x = _pad_even(inputs.x)
    b, _, h, w = x.shape
    double: list[Tensor | None] = [None] * depth
    single: list[Tensor | None] = [None] * depth_single
    for control in active:
        app = control.application
        module = app.control_net.module
        dtype = module.img_in.weight.dtype
        device = module.img_in.weight.device
        img = pack_latents(x).to(device=device, dtype=dtype)
        hint = _to_batch(control.tokens.to(device), b)
        out = module(
            img,
            make_image_ids(b, h // 2, w // 2, device=device),
            hint,
            inputs.context.to(device=device, dtype=dtype),
            make_text_ids(b, inputs.context.shape[1], device=device),
            inputs.t.to(device=device, dtype=torch.float32),
            inputs.pooled.to(device=device, dtype=dtype),
            None if inputs.guidance is None else inputs.guidance.to(device=device, dtype=torch.float32),
            modes=app.control_net.control_type,
        )
        cyclic = app.control_net.params.cyclic
        for target, residuals, blocks in ((double, out.double, depth), (single, out.single, depth_single)):
            for i, r in enumerate(spread(residuals, blocks, cyclic)):
                if r is None:
                    continue
                scaled = r * app.strength
                prev = target[i]
                target[i] = scaled if prev is None else prev + scaled
    return tuple(double), tuple(single)


def control_extensions(
    controls: Sequence[PreparedControl],
    inputs: ControlInputs,
    sigma: float,
    *,
    depth: int,
    depth_single: int,
) -> FluxExtensions | None:
    """`FluxExtensions` carrying `control_residuals` (None when no control is active)."""
    found = control_residuals(controls, inputs, sigma, depth=depth, depth_single=depth_single)
    if found is None:
        return None
    double, single = found
    return FluxExtensions(
        double_residuals=double if any(r is not None for r in double) else None,
        single_residuals=single if any(r is not None for r in single) else None,
    )
