"""Tiny hyper-parameters and seeded random weights for every FLUX component, in the files' key layouts.

The tiny models are the real architectures with small widths: a transformer whose hidden size,
block counts and input widths are read back from the shapes by the normal detection (head dim 64,
RoPE axes `default_axes_dim(64)`), a 16-channel VAE with the real 8x downscale, and text encoders
whose widths feed the transformer (T5 width = context_in_dim, CLIP width = vec_in_dim).

Weights are drawn from a CPU `torch.Generator` per model (no global RNG), scaled by 1/sqrt(fan_in)
so activations stay O(1) through blocks and a few sampling steps stay finite and non-constant.

"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from models.flux.autoencoder import AutoEncoder, AutoEncoderParams
from models.flux.model import Flux
from models.flux.params import FluxParams, default_axes_dim
from models.text.clip import CLIP_TINY, ClipTextParams, build_clip, is_nested, materialize_buffers
from models.text.clip import FILE_PREFIX as CLIP_FILE_PREFIX
from models.text.t5 import T5_TINY, T5EncoderParams, build_t5, tie_embeddings

TINY_HIDDEN = 128
TINY_HEADS = 2

TINY_FLUX_DEV = FluxParams(
    in_channels=64,
    out_channels=64,
    vec_in_dim=CLIP_TINY.width,
    context_in_dim=T5_TINY.width,
    hidden_size=TINY_HIDDEN,
    mlp_ratio=4.0,
    num_heads=TINY_HEADS,
    depth=2,
    depth_single_blocks=2,
    axes_dim=default_axes_dim(TINY_HIDDEN // TINY_HEADS),
    guidance_embed=True,
)
TINY_FLUX_SCHNELL = FluxParams(**{**TINY_FLUX_DEV.__dict__, "guidance_embed": False})
TINY_FLUX_FILL = FluxParams(**{**TINY_FLUX_DEV.__dict__, "in_channels": 384})
TINY_FLUX_CANNY = FluxParams(**{**TINY_FLUX_DEV.__dict__, "in_channels": 128})
TINY_AE = AutoEncoderParams(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=2, z_channels=16)
TINY_CLIP: ClipTextParams = CLIP_TINY
TINY_T5: T5EncoderParams = T5_TINY

_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or "Norm" in type(module).__name__


M = TypeVar("M", bound=nn.Module)


def _built(factory: Callable[..., M], *args: object) -> M:
    """Construct on meta: skips the default init that `init_random` replaces anyway."""
    with torch.device("meta"):
        return factory(*args)


def init_random(module: M, seed: int) -> M:
    """Assign every parameter fresh values drawn in sorted key order from one seeded generator.

    Matrices and kernels: N(0, 1/fan_in); embeddings: N(0, 0.1^2); norm scales: 1 + N(0, 0.05^2);
    biases: N(0, 0.02^2). numpy's PCG64 draws the numbers (single-threaded, stable across
    versions) and the arrays are adopted without a copy (`assign=True`), so this also fills
    modules built on the meta device.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    owners = {}
    for name, sub in module.named_modules():
        for pname, _ in sub.named_parameters(recurse=False):
            owners[f"{name}.{pname}" if name else pname] = sub
    values = {}
    for key, param in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        owner = owners[key]
        noise = rng.standard_normal(tuple(param.shape), dtype=np.float32)
        if isinstance(owner, nn.Embedding) or "relative_attention_bias" in key:
            noise *= 0.1
        elif param.ndim >= 2:
            noise *= 1.0 / math.prod(param.shape[1:]) ** 0.5
        elif _is_norm(owner) and key.rsplit(".", 1)[-1] in ("weight", "scale"):
            noise = 1.0 + 0.05 * noise
        else:
            noise *= 0.02
        values[key] = nn.Parameter(torch.from_numpy(noise), requires_grad=False)
    module.load_state_dict(values, strict=False, assign=True)
    return module


def tiny_flux(params: FluxParams = TINY_FLUX_DEV, seed: int = 0) -> Flux:
    """A random-weight FLUX transformer (float32, eval)."""
    return init_random(_built(Flux, params), seed).eval().requires_grad_(False)


def tiny_autoencoder(params: AutoEncoderParams = TINY_AE, seed: int = 0) -> AutoEncoder:
    """A random-weight FLUX VAE (float32, eval)."""
    return init_random(_built(AutoEncoder, params), seed).eval().requires_grad_(False)


def tiny_clip(params: ClipTextParams = TINY_CLIP, seed: int = 0) -> nn.Module:
    """A random-weight CLIPTextModel (float32, eval)."""
    model = init_random(_built(build_clip, params), seed)
    materialize_buffers(model)  # position ids are not parameters
    return model.eval().requires_grad_(False)


def tiny_t5(params: T5EncoderParams = TINY_T5, seed: int = 0) -> nn.Module:
    """A random-weight T5EncoderModel (float32, eval); token embedding tied to `shared`."""
    model = init_random(_built(build_t5, params), seed)
    tie_embeddings(model)  # assignment replaced `shared.weight`; the encoder must read the same table
    return model.eval().requires_grad_(False)


# --- state dicts as the files store them --------------------------------------------------------


def module_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Persistent tensors, contiguous, shared ones once (safetensors refuses aliases)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, t in module.state_dict().items():
        if t.data_ptr() in seen and t.numel():
            continue
        seen.add(t.data_ptr())
        out[key] = t.detach().contiguous()
    return out


def clip_file_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """CLIP text tower under the file keys (`text_model.*`, as clip_l.safetensors)."""
    prefix = "" if is_nested(model) else CLIP_FILE_PREFIX
    return {prefix + k: v for k, v in module_state(model).items() if not k.endswith("position_ids")}


def t5_file_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """T5 encoder under the file keys (`shared.weight`, `encoder.*`; the tied copy dropped)."""
    state = module_state(model)
    state.pop("encoder.embed_tokens.weight", None)
    if "shared.weight" not in state:  # module_state kept the tied table under its other name
        shared = model.get_submodule("shared")
        assert isinstance(shared, nn.Embedding)  # T5EncoderModel's token table
        state["shared.weight"] = shared.weight.detach().contiguous()
    return state


def cast_state(
    state: dict[str, torch.Tensor],
    dtype: torch.dtype,
    *,
    fp8: torch.dtype | None = None,
    fp8_keys: frozenset[str] = frozenset(),
) -> dict[str, torch.Tensor]:
    """Every floating tensor in `dtype`; those in `fp8_keys` in `fp8` (as community fp8 files do)."""
    out = {}
    for key, t in state.items():
        target = fp8 if fp8 is not None and key in fp8_keys else dtype
        out[key] = t.to(target).contiguous() if t.is_floating_point() else t
    return out


def linear_keys(module: nn.Module, prefix: str = "") -> frozenset[str]:
    """File keys of the weights of every nn.Linear (the tensors fp8 files store in fp8)."""
    return frozenset(
        f"{prefix}{name}.weight" for name, sub in module.named_modules() if isinstance(sub, nn.Linear)
    )
