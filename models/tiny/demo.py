"""`write_demo_models`: tiny random-weight files under the names and in the layouts users have.

models_dir/
  diffusion_models/flux1-dev.safetensors           BFL layout, bf16 (seed 0)
  diffusion_models/flux1-dev-fp8.safetensors       the same weights, Linear weights float8_e4m3fn
  diffusion_models/flux1-kontext-dev.safetensors   dev architecture, its own weights
  diffusion_models/flux1-fill-dev.safetensors      img_in takes 384 features
  diffusion_models/flux1-canny-dev.safetensors     img_in takes 128 features
  checkpoints/flux1-schnell.safetensors            ComfyUI all-in-one: schnell + CLIP-L + T5 + VAE
  text_encoders/clip_l.safetensors                 fp16, HF keys
  text_encoders/t5xxl_fp16.safetensors             fp16, HF keys
  text_encoders/t5xxl_fp8_e4m3fn.safetensors       the same T5, Linear weights and embedding fp8
  vae/ae.safetensors                               float32, BFL keys
  diffusers/FLUX.1-dev-tiny/                       pipeline folder: dev transformer (2 shards + index),
                                                   VAE, both encoders, tokenizers (same weights as above)
  tokenizers/clip_l/, tokenizers/t5xxl/            tiny tokenizers
  loras/                                           a tiny LoRA in every file format (models.tiny.loras)
  controlnet/, ...                                 control models (see models.tiny.control)
Bytes depend only on the seeds (and the torch / transformers versions written into configs).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from models.flux.autoencoder import AutoEncoderParams
from models.flux.params import FluxParams
from models.formats.diffusers_flux import bfl_to_diffusers_transformer
from models.formats.diffusers_vae import bfl_to_diffusers_vae
from models.text.clip import clip_config
from models.text.t5 import t5_config
from models.text.tiny_tokenizers import (
    write_tiny_clip_tokenizer,
    write_tiny_t5_tokenizer,
    write_tiny_tokenizers,
)

from .loras import write_tiny_loras
from .weights import (
    TINY_AE,
    TINY_CLIP,
    TINY_FLUX_CANNY,
    TINY_FLUX_DEV,
    TINY_FLUX_FILL,
    TINY_FLUX_SCHNELL,
    TINY_T5,
    cast_state,
    clip_file_state,
    linear_keys,
    module_state,
    t5_file_state,
    tiny_autoencoder,
    tiny_clip,
    tiny_flux,
    tiny_t5,
)

log = logging.getLogger(__name__)

DEMO_METADATA = {"fluxloom.demo": "tiny random weights, not a real model"}
FP8 = torch.float8_e4m3fn
# Seeds per file, so each tiny model is distinct but reproducible.
SEEDS: Mapping[str, int] = {
    "dev": 0,
    "kontext": 1,
    "fill": 2,
    "canny": 3,
    "schnell": 4,
    "clip_l": 5,
    "t5xxl": 6,
    "ae": 7,
    "schnell_clip": 8,
    "schnell_t5": 9,
    "schnell_ae": 10,
}
DIFFUSERS_NAME = "FLUX.1-dev-tiny"


def _save(path: Path, state: Mapping[str, torch.Tensor], **metadata: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(dict(state), str(path), metadata={**DEMO_METADATA, **metadata})
    return path


def _json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def transformer_config(params: FluxParams = TINY_FLUX_DEV) -> dict:
    """diffusers FluxTransformer2DModel config.json for tiny params."""
    return {
        "_class_name": "FluxTransformer2DModel",
        "patch_size": 1,
        "in_channels": params.in_channels,
        "out_channels": None,
        "num_layers": params.depth,
        "num_single_layers": params.depth_single_blocks,
        "attention_head_dim": params.head_dim,
        "num_attention_heads": params.num_heads,
        "joint_attention_dim": params.context_in_dim,
        "pooled_projection_dim": params.vec_in_dim,
        "guidance_embeds": params.guidance_embed,
        "axes_dims_rope": list(params.axes_dim),
    }


def vae_config(params: AutoEncoderParams = TINY_AE) -> dict:
    """diffusers AutoencoderKL config.json for tiny params (no quant convs, as FLUX's)."""
    levels = len(params.ch_mult)
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": params.in_channels,
        "out_channels": params.out_ch,
        "block_out_channels": [params.ch * m for m in params.ch_mult],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": params.num_res_blocks,
        "latent_channels": params.z_channels,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "sample_size": params.resolution,
        "scaling_factor": params.scale_factor,
        "shift_factor": params.shift_factor,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "mid_block_add_attention": True,
        "force_upcast": True,
    }


def write_sharded(folder: Path, state: Mapping[str, torch.Tensor], stem: str, shards: int) -> list[Path]:
    """Split `state` into `shards` files plus `<stem>.safetensors.index.json`, diffusers style."""
    keys = sorted(state)
    per = -(-len(keys) // shards)
    written, weight_map = [], {}
    total = 0
    for i in range(shards):
        name = f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in keys[i * per : (i + 1) * per]}
        written.append(_save(folder / name, part))
        weight_map.update({k: name for k in part})
        total += sum(t.numel() * t.element_size() for t in part.values())
    written.append(
        _json(
            folder / f"{stem}.safetensors.index.json",
            {"metadata": {"total_size": total}, "weight_map": weight_map},
        )
    )
    return written


def write_diffusers_pipeline(
    folder: Path, *, flux_state, vae_state, clip_state, t5_state, tokenizers: Mapping[str, Path] | None = None
) -> list[Path]:
    """A FluxPipeline folder from BFL / HF-layout state dicts (converted with the formats converters).

    tokenizers: existing tiny tokenizer folders ("clip_l", "t5xxl") to copy instead of training anew.
    """
    tokenizers = tokenizers or {}
    written = [
        _json(
            folder / "model_index.json",
            {
                "_class_name": "FluxPipeline",
                "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "text_encoder_2": ["transformers", "T5EncoderModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "tokenizer_2": ["transformers", "T5TokenizerFast"],
                "transformer": ["diffusers", "FluxTransformer2DModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            },
        )
    ]
    written.append(
        _json(
            folder / "scheduler" / "scheduler_config.json",
            {
                "_class_name": "FlowMatchEulerDiscreteScheduler",
                "num_train_timesteps": 1000,
                "shift": 3.0,
                "use_dynamic_shifting": True,
                "base_shift": 0.5,
                "max_shift": 1.15,
                "base_image_seq_len": 256,
                "max_image_seq_len": 4096,
            },
        )
    )
    written.append(_json(folder / "transformer" / "config.json", transformer_config()))
    written += write_sharded(
        folder / "transformer", bfl_to_diffusers_transformer(flux_state), "diffusion_pytorch_model", shards=2
    )
    written.append(_json(folder / "vae" / "config.json", vae_config()))
    written.append(
        _save(folder / "vae" / "diffusion_pytorch_model.safetensors", bfl_to_diffusers_vae(vae_state))
    )
    clip_conf = clip_config(TINY_CLIP).to_dict() | {"architectures": ["CLIPTextModel"]}
    written.append(_json(folder / "text_encoder" / "config.json", clip_conf))
    written.append(_save(folder / "text_encoder" / "model.safetensors", clip_state))
    t5_conf = t5_config(TINY_T5).to_dict() | {"architectures": ["T5EncoderModel"]}
    written.append(_json(folder / "text_encoder_2" / "config.json", t5_conf))
    written += write_sharded(folder / "text_encoder_2", t5_state, "model", shards=2)
    for sub, tokenizer in (("tokenizer", tokenizers.get("clip_l")), ("tokenizer_2", tokenizers.get("t5xxl"))):
        if tokenizer is not None:  # trained once: copy the files written under tokenizers/
            (folder / sub).mkdir(parents=True, exist_ok=True)
            written += [Path(shutil.copy2(f, folder / sub / f.name)) for f in sorted(tokenizer.iterdir())]
        else:
            written += (write_tiny_clip_tokenizer if sub == "tokenizer" else write_tiny_t5_tokenizer)(
                folder / sub
            )
    return written


def write_demo_models(models_dir: Path) -> list[Path]:
    """Write every tiny demo model under `models_dir` (see module doc); returns the files written."""
    models_dir = Path(models_dir)
    bf16, fp16, fp32 = torch.bfloat16, torch.float16, torch.float32
    written: list[Path] = []

    dev = tiny_flux(TINY_FLUX_DEV, SEEDS["dev"])
    dev_state = cast_state(module_state(dev), bf16)  # released weights are bf16; fp8 files derive from them
    diffusion = models_dir / "diffusion_models"
    written.append(_save(diffusion / "flux1-dev.safetensors", dev_state))
    written.append(
        _save(
            diffusion / "flux1-dev-fp8.safetensors",
            cast_state(dev_state, bf16, fp8=FP8, fp8_keys=linear_keys(dev)),
        )
    )
    for name, params, seed in (
        ("flux1-kontext-dev", TINY_FLUX_DEV, SEEDS["kontext"]),
        ("flux1-fill-dev", TINY_FLUX_FILL, SEEDS["fill"]),
        ("flux1-canny-dev", TINY_FLUX_CANNY, SEEDS["canny"]),
    ):
        written.append(
            _save(diffusion / f"{name}.safetensors", cast_state(module_state(tiny_flux(params, seed)), bf16))
        )

    clip = tiny_clip(TINY_CLIP, SEEDS["clip_l"])
    clip_state = clip_file_state(clip)
    t5 = tiny_t5(TINY_T5, SEEDS["t5xxl"])
    t5_state = t5_file_state(t5)
    t5_fp8_keys = linear_keys(t5) | {"shared.weight"}
    encoders = models_dir / "text_encoders"
    written.append(_save(encoders / "clip_l.safetensors", cast_state(clip_state, fp16)))
    written.append(_save(encoders / "t5xxl_fp16.safetensors", cast_state(t5_state, fp16)))
    written.append(
        _save(
            encoders / "t5xxl_fp8_e4m3fn.safetensors",
            cast_state(t5_state, fp16, fp8=FP8, fp8_keys=t5_fp8_keys),
        )
    )

    ae_state = module_state(tiny_autoencoder(TINY_AE, SEEDS["ae"]))
    written.append(_save(models_dir / "vae" / "ae.safetensors", cast_state(ae_state, fp32)))

    written.append(
        _save(
            models_dir / "checkpoints" / "flux1-schnell.safetensors",
            {
                **_prefixed(
                    "model.diffusion_model.",
                    cast_state(module_state(tiny_flux(TINY_FLUX_SCHNELL, SEEDS["schnell"])), bf16),
                ),
                **_prefixed(
                    "text_encoders.clip_l.transformer.",
                    cast_state(clip_file_state(tiny_clip(TINY_CLIP, SEEDS["schnell_clip"])), fp16),
                ),
                **_prefixed(
                    "text_encoders.t5xxl.transformer.",
                    cast_state(t5_file_state(tiny_t5(TINY_T5, SEEDS["schnell_t5"])), fp16),
                ),
                **_prefixed(
                    "vae.", cast_state(module_state(tiny_autoencoder(TINY_AE, SEEDS["schnell_ae"])), bf16)
                ),
            },
        )
    )

    written += write_tiny_tokenizers(models_dir)
    written += write_diffusers_pipeline(
        models_dir / "diffusers" / DIFFUSERS_NAME,
        flux_state=dev_state,
        vae_state=cast_state(ae_state, fp32),
        clip_state=cast_state(clip_state, fp16),
        t5_state=cast_state(t5_state, fp16),
        tokenizers={kind: models_dir / "tokenizers" / kind for kind in ("clip_l", "t5xxl")},
    )
    written += write_tiny_loras(models_dir / "loras")
    from .control import write_tiny_control_models

    written += write_tiny_control_models(models_dir)
    log.info("wrote %d demo model files under %s", len(written), models_dir)
    return written


def _prefixed(prefix: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}
