"""Tiny random-weight control models in the layouts users download, for demos and tests.

controlnet/
  flux-canny-controlnet-v3.safetensors          XLabs (BFL trunk, pixel hint encoder, 2 double blocks)
  mistoline_flux.dev_v1.safetensors             Mistoline (Linear+SiLU zero blocks, single_controlnet_blocks)
  FLUX.1-dev-Controlnet-Union.safetensors       InstantX Union (diffusers keys, 10 mode rows)
  FLUX.1-dev-ControlNet-Union-Pro-2.0.safetensors  Shakker Union-Pro 2.0 (diffusers keys, 3 double, no mode)
  FLUX.1-dev-Controlnet-Inpainting-Beta.safetensors  Alimama inpainting (17-channel hint: latent + mask)
clip_vision/
  sigclip_vision_patch14_384.safetensors        SigLIP vision tower (HF keys, 384 px, 8x8 patches of 48 px)
  clip_vision_l.safetensors                     CLIP ViT vision tower with projection (224 px, 16x16 patches)
style_models/
  flux1-redux-dev.safetensors                   Redux: SigLIP width -> T5 width of the tiny transformer
xlabs/ipadapters/
  flux-ip-adapter.safetensors                   XLabs IP-Adapter: CLIP projection width -> 4 tokens, 2 blocks
All trunks have the tiny dev transformer's widths, so they drive `flux1-dev.safetensors`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from models.control.ipadapter import XLabsIPAdapter
from models.control.model import FluxControlNet
from models.control.params import DIFFUSERS, MISTOLINE, XLABS, ControlNetParams
from models.control.redux import ReduxImageEncoder
from models.flux.params import FluxParams
from models.formats.control_flux import bfl_to_diffusers_controlnet
from models.vision.towers import (
    CLIP_VISION,
    SIGLIP,
    VisionParams,
    build_vision_tower,
    materialize_position_ids,
)

from .weights import TINY_FLUX_DEV, cast_state, init_random, module_state

# 384 px like the released tower, 48 px patches (8 x 8 = 64 tokens instead of 729) to keep Redux cheap
TINY_SIGLIP = VisionParams(SIGLIP, 64, 128, 2, 1, 384, 48, use_head=True)
TINY_CLIP_VISION = VisionParams(CLIP_VISION, 64, 128, 2, 1, 224, 14, projection_dim=32)
VISION_SEEDS: Mapping[str, int] = {"siglip": 110, "clip_vision": 111, "redux": 112, "ipadapter": 113}

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


def tiny_vision_tower(params: VisionParams, seed: int = 0) -> torch.nn.Module:
    """A random-weight transformers vision tower (float32, eval)."""
    with torch.device("meta"):
        module = build_vision_tower(params)
    module = init_random(module, seed)
    materialize_position_ids(module)
    return module.eval().requires_grad_(False)


def vision_file_state(module: torch.nn.Module, params: VisionParams) -> dict[str, torch.Tensor]:
    """A tower's tensors under the file keys (`vision_model.*`, `visual_projection.weight`)."""
    state = {k: v for k, v in module_state(module).items() if not k.endswith("position_ids")}
    if params.family == SIGLIP:  # transformers' SiglipVisionModel drops the level the files keep
        state = {f"vision_model.{k}": v for k, v in state.items()}
    return state


def tiny_redux(seed: int = 0, vision_dim: int = TINY_SIGLIP.hidden_size) -> ReduxImageEncoder:
    """A random-weight Redux encoder from the tiny SigLIP width to the tiny transformer's T5 width."""
    with torch.device("meta"):
        module = ReduxImageEncoder(vision_dim, 4 * vision_dim, TINY_FLUX_DEV.context_in_dim)
    return init_random(module, seed).eval().requires_grad_(False)


def tiny_ipadapter(seed: int = 0, tokens: int = 4) -> XLabsIPAdapter:
    """A random-weight XLabs IP-Adapter for the tiny CLIP vision tower and the tiny dev transformer."""
    p = TINY_FLUX_DEV
    with torch.device("meta"):
        module = XLabsIPAdapter(
            TINY_CLIP_VISION.projection_dim, p.context_in_dim, tokens, p.hidden_size, p.depth
        )
    return init_random(module, seed).eval().requires_grad_(False)


def write_tiny_control_models(models_dir: Path) -> list[Path]:
    """All tiny control-model files (ControlNets, vision towers, Redux) under `models_dir`."""
    from .demo import DEMO_METADATA

    def save(path: Path, state: Mapping[str, torch.Tensor]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(dict(state), str(path), metadata=dict(DEMO_METADATA))
        return path

    written = write_tiny_controlnets(models_dir, save)
    for params, name in (
        (TINY_SIGLIP, "sigclip_vision_patch14_384.safetensors"),
        (TINY_CLIP_VISION, "clip_vision_l.safetensors"),
    ):
        tower = tiny_vision_tower(params, VISION_SEEDS[params.family])
        state = cast_state(vision_file_state(tower, params), torch.float16)
        written.append(save(Path(models_dir) / "clip_vision" / name, state))
    redux = cast_state(module_state(tiny_redux(VISION_SEEDS["redux"])), torch.bfloat16)
    written.append(save(Path(models_dir) / "style_models" / "flux1-redux-dev.safetensors", redux))
    ip = cast_state(module_state(tiny_ipadapter(VISION_SEEDS["ipadapter"])), torch.bfloat16)
    written.append(save(Path(models_dir) / "xlabs" / "ipadapters" / "flux-ip-adapter.safetensors", ip))
    return written
