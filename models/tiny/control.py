"""Tiny random-weight control models in the layouts users download, for demos and tests.

controlnet/
  flux-canny-controlnet-v3.safetensors          XLabs (BFL trunk, pixel hint encoder, 2 double blocks)
  mistoline_flux.dev_v1.safetensors             Mistoline (Linear+SiLU zero blocks, single_controlnet_blocks)
  FLUX.1-dev-Controlnet-Union.safetensors       InstantX Union (diffusers keys, 10 mode rows)
  FLUX.1-dev-ControlNet-Union-Pro-2.0.safetensors  Shakker Union-Pro 2.0 (diffusers keys, 3 double, no mode)
  FLUX.1-dev-Controlnet-Inpainting-Beta.safetensors  Alimama inpainting (17-channel hint: latent + mask)
All trunks have the tiny dev transformer's widths, so they drive `flux1-dev.safetensors`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from models.control.model import FluxControlNet
from models.control.params import DIFFUSERS, MISTOLINE, XLABS, ControlNetParams
from models.flux.params import FluxParams
from models.formats.control_flux import bfl_to_diffusers_controlnet

from .weights import TINY_FLUX_DEV, cast_state, init_random, module_state

CONTROL_SEEDS: Mapping[str, int] = {
    "xlabs": 100,
    "mistoline": 101,
    "union": 102,
    "union_pro2": 103,
    "inpaint": 104,
}
CONTROLNET_FILES: Mapping[str, str] = {
    "xlabs": "flux-canny-controlnet-v3.safetensors",
    "mistoline": "mistoline_flux.dev_v1.safetensors",
    "union": "FLUX.1-dev-Controlnet-Union.safetensors",
    "union_pro2": "FLUX.1-dev-ControlNet-Union-Pro-2.0.safetensors",
    "inpaint": "FLUX.1-dev-Controlnet-Inpainting-Beta.safetensors",
}


def tiny_controlnet_params(
    kind: str,
    *,
    depth: int = 2,
    single: int = 0,
    hint_channels: int = 16,
    num_modes: int = 0,
    trunk: FluxParams = TINY_FLUX_DEV,
) -> ControlNetParams:
    """ControlNetParams with the tiny transformer's widths and the given block counts."""
    params = FluxParams(**{**trunk.__dict__, "depth": depth, "depth_single_blocks": single})
    return ControlNetParams(trunk=params, kind=kind, hint_channels=hint_channels, num_modes=num_modes)


def tiny_controlnet(params: ControlNetParams, seed: int = 0) -> FluxControlNet:
    """A random-weight FluxControlNet (float32, eval); zero blocks are random, not zero, so it acts."""
    with torch.device("meta"):
        module = FluxControlNet(params)
    return init_random(module, seed).eval().requires_grad_(False)


def _state(params: ControlNetParams, seed: int) -> dict[str, torch.Tensor]:
    return cast_state(module_state(tiny_controlnet(params, seed)), torch.bfloat16)


def write_tiny_controlnets(models_dir: Path, save: Callable[..., Path]) -> list[Path]:
    """Every tiny ControlNet file under `models_dir/controlnet` (see module doc); `save(path, state)` writes one."""
    folder = Path(models_dir) / "controlnet"
    written = [
        save(
            folder / CONTROLNET_FILES["xlabs"], _state(tiny_controlnet_params(XLABS), CONTROL_SEEDS["xlabs"])
        )
    ]
    misto = _state(tiny_controlnet_params(MISTOLINE, single=1), CONTROL_SEEDS["mistoline"])
    written.append(
        save(
            folder / CONTROLNET_FILES["mistoline"],
            {
                k.replace("controlnet_single_blocks.", "single_controlnet_blocks.", 1): v
                for k, v in misto.items()
            },
        )
    )
    union = _state(tiny_controlnet_params(DIFFUSERS, depth=2, single=2, num_modes=10), CONTROL_SEEDS["union"])
    written.append(save(folder / CONTROLNET_FILES["union"], bfl_to_diffusers_controlnet(union)))
    pro2 = _state(tiny_controlnet_params(DIFFUSERS, depth=3), CONTROL_SEEDS["union_pro2"])
    written.append(save(folder / CONTROLNET_FILES["union_pro2"], bfl_to_diffusers_controlnet(pro2)))
    inpaint = _state(tiny_controlnet_params(DIFFUSERS, depth=2, hint_channels=17), CONTROL_SEEDS["inpaint"])
    written.append(save(folder / CONTROLNET_FILES["inpaint"], bfl_to_diffusers_controlnet(inpaint)))
    return written


def write_tiny_control_models(models_dir: Path) -> list[Path]:
    """All tiny control-model files (ControlNets, ...) under `models_dir`."""
    from .demo import DEMO_METADATA

    def save(path: Path, state: Mapping[str, torch.Tensor]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(dict(state), str(path), metadata=dict(DEMO_METADATA))
        return path

    return write_tiny_controlnets(models_dir, save)
