"""ControlNets at sampling time: find the applications in the conditionings, prepare their hints for
the latent size (VAE-encoding latent hints), and list the modules the memory manager must load."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from models.control.apply import ControlApplication, PreparedControl, hint_pixels, prepare_controls
from nodes.latent import vae_ops
from nodes.runtime.services import Ctx


def applications(conditionings: Iterable[Sequence[Any] | None]) -> tuple[ControlApplication, ...]:
    """Every distinct control chain (its newest application) in CONDITIONING lists, in order."""
    seen: dict[int, ControlApplication] = {}
    for conditioning in conditionings:
        for _, options in conditioning or ():
            control = options.get("control")
            if isinstance(control, ControlApplication):
                seen.setdefault(id(control), control)
    return tuple(seen.values())


def control_modules(apps: Iterable[ControlApplication]) -> tuple[nn.Module, ...]:
    """The ControlNet modules of all chains, each once."""
    out: dict[int, nn.Module] = {}
    for app in apps:
        for module in app.modules():
            out.setdefault(id(module), module)
    return tuple(out.values())


def ip_attention(model: Any) -> tuple[Any, ...]:
    """The IP-Adapter attentions a MODEL handle carries (ApplyFluxIPAdapter), in application order."""
    return tuple(model.options.extras.get("double_attention", ()))


def model_extra_modules(model: Any, apps: Iterable[ControlApplication]) -> tuple[nn.Module, ...]:
    """Every module besides the transformer a sampling run needs: ControlNets and IP-Adapters."""
    adapters: dict[int, nn.Module] = {}
    for attention in ip_attention(model):
        adapters.setdefault(id(attention.adapter), attention.adapter)
    return control_modules(apps) + tuple(adapters.values())


def encode_hints(
    ctx: Ctx, apps: Sequence[ControlApplication], height: int, width: int
) -> dict[int, torch.Tensor]:
    """VAE latents of the latent-input hints by id of their application, encoded before the transformer
    and the ControlNets are placed (so the VAE never has to fit beside them)."""
    out: dict[int, torch.Tensor] = {}
    for app in apps:
        for a in app.chain():
            if a.control_net.params.latent_input and a.vae is not None and id(a) not in out:
                out[id(a)] = vae_ops.encode(ctx, a.vae, hint_pixels(a, height, width).movedim(1, -1))
    return out


def prepare(
    ctx: Ctx,
    apps: Sequence[ControlApplication],
    height: int,
    width: int,
    *,
    percent_to_sigma: Callable[[float], float],
    device: torch.device,
    encoded: Mapping[int, torch.Tensor] | None = None,
) -> dict[int, tuple[PreparedControl, ...]]:
    """Prepared chains by id of their newest application (what `FluxPredictor(controls=...)` takes);
    `encoded` holds latents from `encode_hints` (others are encoded here)."""
    cache = dict(encoded or {})

    def encoder(app: ControlApplication) -> Callable[[torch.Tensor], torch.Tensor] | None:
        vae = app.vae
        if id(app) in cache:
            latent = cache[id(app)]
            return lambda _pixels: latent
        if vae is None:
            return None
        return lambda pixels: vae_ops.encode(ctx, vae, pixels.movedim(1, -1))

    return {
        id(app): prepare_controls(
            app, height, width, percent_to_sigma=percent_to_sigma, encoder=encoder, device=device
        )
        for app in apps
    }
