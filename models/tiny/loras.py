"""Tiny random LoRAs in every file format users have, matched to the tiny FLUX dev model and encoders.

Each builder returns a state dict (and safetensors metadata) in the format's real key layout
(reference §7.2-7.7), with shapes taken from the tiny modules built on the meta device, so
every key maps onto a weight. `write_tiny_loras(loras_dir)` writes them under these names:

  tiny-kohya.safetensors            lora_unet_ (every Linear) + lora_te1_ (CLIP) + lora_te3_ (T5)
  tiny-kohya-split-qkv.safetensors  split_qkv training: fused qkv / linear1 with block-sparse up
  tiny-diffusers.safetensors        PEFT lora_A/lora_B under transformer. / text_encoder.,
                                    lora_alpha in `lora_adapter_metadata`
  tiny-comfyui.safetensors          ComfyUI training output: diffusion_model. + lora_up/down/alpha,
                                    .diff_b, .diff, .set_weight, .dora_scale
  tiny-onetrainer.safetensors       lora_transformer_ (diffusers path) + lora_te1_ / lora_te2_ (T5)
  tiny-loha.safetensors             SimpleTuner LyCORIS LoHa (lycoris_ + hada_*)
  tiny-lokr.safetensors             SimpleTuner LyCORIS LoKr (lycoris_ + lokr_*)
  tiny-xlabs.safetensors            XLabs processors (qkv_lora1 ... proj_lora)
  flux1-canny-dev-lora.safetensors  BFL control LoRA: bare keys, lora_B.bias, norm scales, img_in 128 wide

Values: numpy PCG64 per file; delta entries are about 0.3 / sqrt(fan_in), i.e. a visible change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from models.flux.model import Flux
from models.formats.canonical import safetensors_bytes
from models.lora.targets import (
    CLIP_PREFIX,
    T5_PREFIX,
    LoraTargets,
    block_counts,
    diffusers_modules,
    diffusers_target,
)
from models.text.clip import build_clip
from models.text.t5 import build_t5

from .weights import TINY_CLIP, TINY_FLUX_DEV, TINY_T5

RANK = 4
Tensors = dict[str, torch.Tensor]
LoraBuild = tuple[Tensors, dict[str, str]]
METADATA = {"fluxloom.demo": "tiny random LoRA, not a real model"}


def tiny_lora_targets() -> LoraTargets:
    """Shapes of the tiny dev transformer, CLIP-L and T5 (built on meta: nothing allocated)."""
    with torch.device("meta"):
        return LoraTargets.of(Flux(TINY_FLUX_DEV), build_clip(TINY_CLIP), build_t5(TINY_T5))


class _Draw:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def normal(self, *shape: int, std: float = 1.0, mean: float = 0.0) -> torch.Tensor:
        values = mean + std * self.rng.standard_normal(shape, dtype=np.float32)
        return torch.from_numpy(values).to(torch.bfloat16)

    def pair(self, out: int, inp: int, rank: int = RANK) -> tuple[torch.Tensor, torch.Tensor]:
        """(up [out, r], down [r, in]) whose product has entries of about 0.3 / sqrt(in)."""
        return self.normal(out, rank, std=0.3 / math.sqrt(rank)), self.normal(
            rank, inp, std=1 / math.sqrt(inp)
        )


def _linear_modules(targets: LoraTargets, prefix: str = "") -> Iterator[tuple[str, tuple[int, ...]]]:
    """(module, weight shape) of every Linear under `prefix` ("" = the transformer), sorted."""
    for key in sorted(targets.shapes):
        shape = targets.shapes[key]
        if not key.endswith(".weight") or len(shape) != 2:
            continue
        if prefix and not key.startswith(prefix):
            continue
        if not prefix and key.startswith((CLIP_PREFIX, T5_PREFIX)):
            continue
        if any(s in key for s in ("embedding", "embed_tokens", "shared.", "relative_attention_bias")):
            continue
        yield key[: -len(".weight")], shape


def _clip_file_path(module: str) -> str:
    inner = module[len(CLIP_PREFIX) :]
    return inner if inner.startswith("text_model.") else "text_model." + inner


def _kohya_pair(out: Tensors, name: str, draw: _Draw, shape: tuple[int, ...], alpha: float) -> None:
    up, down = draw.pair(shape[0], shape[1])
    out[f"{name}.lora_up.weight"], out[f"{name}.lora_down.weight"] = up, down
    out[f"{name}.alpha"] = torch.tensor(alpha)


def _text_kohya(out: Tensors, targets: LoraTargets, draw: _Draw, t5_prefix: str) -> None:
    for module, shape in _linear_modules(targets, CLIP_PREFIX):
        _kohya_pair(out, "lora_te1_" + _clip_file_path(module).replace(".", "_"), draw, shape, 2.0)
    for module, shape in _linear_modules(targets, T5_PREFIX):
        _kohya_pair(out, t5_prefix + module[len(T5_PREFIX) :].replace(".", "_"), draw, shape, 2.0)


def kohya_lora(targets: LoraTargets, seed: int = 100) -> LoraBuild:
    draw, out = _Draw(seed), Tensors()
    for module, shape in _linear_modules(targets):
        _kohya_pair(out, "lora_unet_" + module.replace(".", "_"), draw, shape, alpha=2.0)
    _text_kohya(out, targets, draw, "lora_te3_")
    return out, {}


def kohya_split_qkv_lora(targets: LoraTargets, seed: int = 101) -> LoraBuild:
    """sd-scripts `split_qkv=True`: per split a rank-r pair, saved fused (reference §7.4)."""
    draw, out = _Draw(seed), Tensors()
    for module, shape in _linear_modules(targets):
        name = "lora_unet_" + module.replace(".", "_")
        hidden = shape[1]
        if module.endswith(("attn.qkv", "linear1")):
            sizes = [hidden] * 3 + ([shape[0] - 3 * hidden] if module.endswith("linear1") else [])
            pairs = [draw.pair(rows, hidden) for rows in sizes]
            up = torch.zeros(shape[0], RANK * len(sizes), dtype=torch.bfloat16)
            row = 0
            for j, (piece_up, _) in enumerate(pairs):
                up[row : row + piece_up.shape[0], j * RANK : (j + 1) * RANK] = piece_up
                row += piece_up.shape[0]
            out[f"{name}.lora_up.weight"] = up
            out[f"{name}.lora_down.weight"] = torch.cat([d for _, d in pairs], dim=0)
            out[f"{name}.alpha"] = torch.tensor(2.0)
        else:
            _kohya_pair(out, name, draw, shape, alpha=2.0)
    return out, {}


def _diffusers_pieces(targets: LoraTargets) -> Iterator[tuple[str, int, int]]:
    """(diffusers module, out rows, in features) of every Linear of the tiny transformer."""
    double, single = block_counts(targets)
    for module in diffusers_modules(double, single):
        target = diffusers_target(module, targets)
        if target is None:
            continue
        shape = targets.shapes[target.weight_key]
        rows = target.offset[2] if target.offset is not None else shape[0]
        yield module, rows, shape[1]


def diffusers_lora(targets: LoraTargets, seed: int = 102) -> LoraBuild:
    """What diffusers' save_lora_weights writes for a PEFT LoRA (r=4, lora_alpha=8) on all Linears."""
    draw, out = _Draw(seed), Tensors()
    modules = []
    for module, rows, inp in _diffusers_pieces(targets):
        up, down = draw.pair(rows, inp)
        out[f"transformer.{module}.lora_A.weight"], out[f"transformer.{module}.lora_B.weight"] = down, up
        modules.append(module)
    for module, shape in _linear_modules(targets, CLIP_PREFIX):
        up, down = draw.pair(shape[0], shape[1])
        name = "text_encoder." + _clip_file_path(module)
        out[f"{name}.lora_A.weight"], out[f"{name}.lora_B.weight"] = down, up
    config = {"r": RANK, "lora_alpha": 2 * RANK, "use_rslora": False, "alpha_pattern": {}, "rank_pattern": {}}
    metadata = {f"transformer.{k}": v for k, v in config.items()}
    metadata |= {"transformer.target_modules": sorted(modules)}
    metadata |= {f"text_encoder.{k}": v for k, v in config.items()}
    return out, {"lora_adapter_metadata": json.dumps(metadata, sort_keys=True)}


def comfyui_lora(targets: LoraTargets, seed: int = 103) -> LoraBuild:
    """ComfyUI TrainLoraNode -> SaveLoRA layout, plus DoRA and set_weight modules (§7.6)."""
    draw, out = _Draw(seed), Tensors()
    dora = {"double_blocks.0.img_attn.proj", "single_blocks.1.linear2"}
    replaced = "double_blocks.1.txt_attn.norm.key_norm"
    for key in sorted(k for k in targets.shapes if not k.startswith((CLIP_PREFIX, T5_PREFIX))):
        shape = targets.shapes[key]
        module, _, param = key.rpartition(".")
        name = "diffusion_model." + module
        if len(shape) == 2:
            up, down = draw.pair(shape[0], shape[1])
            out[f"{name}.lora_up.weight"], out[f"{name}.lora_down.weight"] = up, down
            out[f"{name}.alpha"] = torch.tensor(1.0)
            if module in dora:
                out[f"{name}.dora_scale"] = draw.normal(shape[0], 1, std=0.1, mean=1.0)
        elif param == "bias":
            out[f"{name}.diff_b"] = draw.normal(*shape, std=0.01)
        elif module == replaced:
            out[f"{name}.set_weight"] = draw.normal(*shape, std=0.05, mean=1.0)
        else:
            out[f"{name}.diff"] = draw.normal(*shape, std=0.05)
    return out, {}


def onetrainer_lora(targets: LoraTargets, seed: int = 104) -> LoraBuild:
    draw, out = _Draw(seed), Tensors()
    for module, rows, inp in _diffusers_pieces(targets):
        _kohya_pair(out, "lora_transformer_" + module.replace(".", "_"), draw, (rows, inp), alpha=1.0)
    _text_kohya(out, targets, draw, "lora_te2_")
    return out, {}


def _lycoris_names(targets: LoraTargets) -> Iterator[tuple[str, int, int]]:
    for module, rows, inp in _diffusers_pieces(targets):
        yield "lycoris_" + module.replace(".", "_"), rows, inp


def loha_lora(targets: LoraTargets, seed: int = 105) -> LoraBuild:
    """LoHa on every Linear: (w1a @ w1b) a small delta, (w2a @ w2b) near 1 so the product stays small."""
    draw, out = _Draw(seed), Tensors()
    for name, rows, inp in _lycoris_names(targets):
        w1a, w1b = draw.pair(rows, inp)
        out |= {f"{name}.hada_w1_a": w1a, f"{name}.hada_w1_b": w1b}
        out[f"{name}.hada_w2_a"] = draw.normal(rows, RANK, std=0.1 / RANK, mean=1.0 / RANK)
        out[f"{name}.hada_w2_b"] = draw.normal(RANK, inp, std=0.1, mean=1.0)
        out[f"{name}.alpha"] = torch.tensor(float(RANK))
    return out, {}


def lokr_lora(targets: LoraTargets, seed: int = 106, factor: int = 4) -> LoraBuild:
    """LoKr: w1 [f, f] full, w2 = w2_a @ w2_b decomposed (rank 4) on every Linear."""
    draw, out = _Draw(seed), Tensors()
    for name, rows, inp in _lycoris_names(targets):
        out[f"{name}.lokr_w1"] = draw.normal(factor, factor, std=0.5)
        up, down = draw.pair(rows // factor, inp // factor)
        out[f"{name}.lokr_w2_a"], out[f"{name}.lokr_w2_b"] = up, down
        out[f"{name}.alpha"] = torch.tensor(float(RANK))
    return out, {}


def xlabs_lora(targets: LoraTargets, seed: int = 107) -> LoraBuild:
    draw, out = _Draw(seed), Tensors()
    double, single = block_counts(targets)
    hidden = targets.shapes["img_in.weight"][0]
    mlp = targets.shapes["single_blocks.0.linear2.weight"][1] - hidden
    for i in range(double):
        for proc, (rows, inp) in (
            ("qkv_lora1", (3 * hidden, hidden)),
            ("proj_lora1", (hidden, hidden)),
            ("qkv_lora2", (3 * hidden, hidden)),
            ("proj_lora2", (hidden, hidden)),
        ):
            up, down = draw.pair(rows, inp)
            out[f"double_blocks.{i}.processor.{proc}.down.weight"] = down
            out[f"double_blocks.{i}.processor.{proc}.up.weight"] = up
    for i in range(single):
        for proc, (rows, inp) in (("qkv_lora", (3 * hidden, hidden)), ("proj_lora", (hidden, hidden + mlp))):
            up, down = draw.pair(rows, inp)
            out[f"single_blocks.{i}.processor.{proc}.down.weight"] = down
            out[f"single_blocks.{i}.processor.{proc}.up.weight"] = up
    return out, {}


def bfl_control_lora(targets: LoraTargets, seed: int = 108, in_features: int = 128) -> LoraBuild:
    """BFL Canny/Depth LoRA: every Linear with lora_A/lora_B/lora_B.bias, all norm scales, img_in 2x wide."""
    draw, out = _Draw(seed), Tensors()
    for module, shape in _linear_modules(targets):
        inp = in_features if module == "img_in" else shape[1]
        up, down = draw.pair(shape[0], inp)
        out[f"{module}.lora_A.weight"], out[f"{module}.lora_B.weight"] = down, up
        out[f"{module}.lora_B.bias"] = draw.normal(shape[0], std=0.01)
    for key in sorted(targets.shapes):
        if key.endswith(("query_norm.scale", "key_norm.scale")):
            out[key] = draw.normal(*targets.shapes[key], std=0.05, mean=1.0)
    return out, {}


TINY_LORAS: Mapping[str, Callable[[LoraTargets], LoraBuild]] = {
    "tiny-kohya": kohya_lora,
    "tiny-kohya-split-qkv": kohya_split_qkv_lora,
    "tiny-diffusers": diffusers_lora,
    "tiny-comfyui": comfyui_lora,
    "tiny-onetrainer": onetrainer_lora,
    "tiny-loha": loha_lora,
    "tiny-lokr": lokr_lora,
    "tiny-xlabs": xlabs_lora,
    "flux1-canny-dev-lora": bfl_control_lora,
}


def write_tiny_loras(loras_dir: Path) -> list[Path]:
    """Every tiny LoRA as `<name>.safetensors` under `loras_dir`; returns the paths."""
    loras_dir = Path(loras_dir)
    loras_dir.mkdir(parents=True, exist_ok=True)
    targets = tiny_lora_targets()
    written = []
    for name, build in TINY_LORAS.items():
        tensors, metadata = build(targets)
        path = loras_dir / f"{name}.safetensors"
        path.write_bytes(safetensors_bytes(tensors, {**METADATA, **metadata}))
        written.append(path)
    return written
