"""diffusers/PEFT and kohya LoRAs: our patched BFL transformer against diffusers' own loader.

The oracle: diffusers' FluxTransformer2DModel built from the same tiny weights (BFL -> diffusers
converter), `FluxPipeline.lora_state_dict(file)` (diffusers' own kohya conversion and PEFT metadata
reading), `load_lora_into_transformer`, `fuse_lora(lora_scale=s)`. Ours: `load_lora` + `patched_weight`
into our `Flux`. Same inputs through both; fp32; tolerance 1e-5.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from diffusers import FluxTransformer2DModel
from diffusers.loaders import lora_conversion_utils, lora_pipeline
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline
from safetensors import safe_open
from safetensors.torch import save_file

from models.flux.model import Flux
from models.formats.diffusers_flux import bfl_to_diffusers_transformer, diffusers_to_bfl_transformer
from models.lora.load import load_lora
from models.lora.math import patched_weight
from models.tiny.demo import transformer_config
from models.tiny.loras import tiny_lora_targets, write_tiny_loras
from models.tiny.weights import TINY_FLUX_DEV, tiny_flux

from .test_flux_model import _diffusers_forward, _inputs, _ours

pytest.importorskip("peft")

STRENGTH = 0.8
BLOCKS = ("lora_unet_double_blocks_", "lora_unet_single_blocks_", "lora_te")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny LoRA files; kohya ones restricted to their block and text-encoder modules.

    diffusers (the oracle) drops kohya LoRAs on img_in/txt_in/time_in/vector_in/guidance_in (it
    converts them without the `transformer.` prefix its loader then filters on) and merges
    final_layer ones without their alpha; those modules are checked against float64 formulas in
    test_lora_formats instead. Tensors are stored as float32 (same values): diffusers scales kohya
    factors by alpha / rank in the file's dtype, which rounds in bf16 when the scale is not a power of 2.
    """
    folder = tmp_path_factory.mktemp("loras")
    out = {p.stem: p for p in write_tiny_loras(folder)}
    for name in ("tiny-diffusers", "tiny-kohya", "tiny-kohya-split-qkv"):
        with safe_open(str(out[name]), "pt") as f:
            kept = {
                k: f.get_tensor(k).float() for k in f.keys() if k.startswith(BLOCKS) or "kohya" not in name
            }
            metadata = f.metadata()
        out[name] = folder / f"{name}-fp32.safetensors"
        save_file(kept, str(out[name]), metadata=metadata)
    return out


@pytest.fixture(scope="module")
def base() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in tiny_flux(TINY_FLUX_DEV, 0).state_dict().items()}


@pytest.fixture
def tiny_kohya_dims(monkeypatch):
    """diffusers' kohya converter hard-codes FLUX.1's linear1 split (3072 x 3 + 12288); rebuild it from
    its own source with the tiny model's sizes (that literal is the only change)."""
    source = inspect.getsource(lora_conversion_utils._convert_kohya_flux_lora_to_diffusers)
    full = "dims=[3072, 3072, 3072, 12288]"
    assert source.count(full) == 1
    h = TINY_FLUX_DEV.hidden_size
    tiny = f"dims=[{h}, {h}, {h}, {int(h * TINY_FLUX_DEV.mlp_ratio)}]"
    namespace = dict(vars(lora_conversion_utils))
    exec(compile(source.replace(full, tiny), lora_conversion_utils.__file__, "exec"), namespace)
    monkeypatch.setattr(
        lora_pipeline,
        "_convert_kohya_flux_lora_to_diffusers",
        namespace["_convert_kohya_flux_lora_to_diffusers"],
    )


def diffusers_fused(base, path, strength):
    """diffusers' transformer with the LoRA file loaded and fused at `strength` (eval, fp32)."""
    config = {k: v for k, v in transformer_config(TINY_FLUX_DEV).items() if not k.startswith("_")}
    model = FluxTransformer2DModel(**config).eval()
    model.load_state_dict(bfl_to_diffusers_transformer(base), strict=True)
    state, alphas, metadata = FluxPipeline.lora_state_dict(
        str(path), return_alphas=True, return_lora_metadata=True
    )
    FluxPipeline.load_lora_into_transformer(
        state, network_alphas=alphas, transformer=model, metadata=metadata
    )
    model.fuse_lora(lora_scale=strength)
    model.unload_lora()  # drops the adapters, keeps the fused weights
    return model


def ours_patched(base, path, strength):
    """Our Flux with the LoRA's model patches applied by `patched_weight` (as the memory manager does)."""
    lora = load_lora(path, tiny_lora_targets())  # text-encoder parts become (unused here) CLIP patches
    assert lora.unmapped == ()
    patches, _ = lora.at(strength, 0.0)
    by_key: dict[str, list] = {}
    for p in patches:
        by_key.setdefault(p.key, []).append(p)
    state = {k: patched_weight(v, by_key.get(k, ())) for k, v in base.items()}
    model = Flux(TINY_FLUX_DEV).eval()
    model.load_state_dict(state, strict=True)
    return model, state, len(by_key)


@pytest.mark.parametrize("name", ["tiny-diffusers", "tiny-kohya", "tiny-kohya-split-qkv"])
@torch.no_grad()
def test_patched_transformer_matches_diffusers_fuse_lora(name, files, base, tiny_kohya_dims):
    theirs = diffusers_fused(base, files[name], STRENGTH)
    ours, state, patched_keys = ours_patched(base, files[name], STRENGTH)
    assert patched_keys >= 26  # every Linear of the tiny model's blocks carries the LoRA
    fused = diffusers_to_bfl_transformer(theirs.state_dict())
    weight_err = max((state[k] - fused[k]).abs().max().item() for k in state)
    changed = sum(not torch.equal(state[k], base[k]) for k in state)
    assert changed == patched_keys
    x = _inputs(TINY_FLUX_DEV)
    ref, out = _diffusers_forward(theirs, x), _ours(ours, x)
    err = (out - ref).abs().max().item()
    # measured: weights <= 6e-8, outputs <= 2.1e-6
    print(f"{name}: max weight error {weight_err:.1e}, max output error {err:.1e}")
    assert weight_err <= 1e-6, weight_err
    assert err <= 1e-5, f"max |ours - diffusers| = {err:.2e}"
    assert ref.abs().max() > 0.1


@torch.no_grad()
def test_lora_changes_the_output_and_strength_zero_does_not(files, base):
    x = _inputs(TINY_FLUX_DEV)
    plain = Flux(TINY_FLUX_DEV).eval()
    plain.load_state_dict(base, strict=True)
    reference = _ours(plain, x)
    zero, _, _ = ours_patched(base, files["tiny-diffusers"], 0.0)
    assert torch.equal(_ours(zero, x), reference)
    full, _, _ = ours_patched(base, files["tiny-diffusers"], 1.0)
    assert (_ours(full, x) - reference).abs().max() > 1e-2
