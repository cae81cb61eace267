"""Every LoRA file format: the tiny files load with zero unmapped keys, and the patched weights equal
a float64 merge written here from the formulas (flux-formats reference §7.1-7.7), key by key."""

from __future__ import annotations

import json
import logging
from collections import defaultdict

import pytest
import torch

from models.formats.diffusers_flux import bfl_to_diffusers_transformer, diffusers_to_bfl_transformer
from models.lora.detect import detect_formats
from models.lora.load import convert_lora, load_lora
from models.lora.math import patched_weight
from models.lora.targets import LoraTargets
from models.tiny.loras import TINY_LORAS, tiny_lora_targets, write_tiny_loras
from models.tiny.weights import TINY_CLIP, TINY_FLUX_DEV, TINY_T5, tiny_clip, tiny_flux, tiny_t5

S = 0.75  # model strength used throughout
ATOL = 2e-5

EXPECTED_FORMAT = {
    "tiny-kohya": ("kohya",),
    "tiny-kohya-split-qkv": ("kohya",),
    "tiny-diffusers": ("diffusers",),
    "tiny-comfyui": ("comfyui",),
    "tiny-onetrainer": ("onetrainer",),
    "tiny-loha": ("lycoris",),
    "tiny-lokr": ("lycoris",),
    "tiny-xlabs": ("xlabs",),
    "flux1-canny-dev-lora": ("bfl_control",),
}


@pytest.fixture(scope="module")
def base() -> dict[str, dict[str, torch.Tensor]]:
    """Float32 state dicts of the tiny transformer and encoders the LoRAs were made for."""
    return {
        "": dict(tiny_flux(TINY_FLUX_DEV, 0).state_dict()),
        "clip_l.": dict(tiny_clip(TINY_CLIP, 5).state_dict()),
        "t5xxl.": dict(tiny_t5(TINY_T5, 6).state_dict()),
    }


@pytest.fixture(scope="module")
def targets(base) -> LoraTargets:
    return LoraTargets.from_states(*base.items())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    return {p.stem: p for p in write_tiny_loras(folder)}


# --- float64 formulas ------------------------------------------------------------------------


def f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double()


def lora(up, down, alpha=None):
    scale = 1.0 if alpha is None else float(alpha) / down.shape[0]
    return scale * f64(up) @ f64(down)


def loha(w1a, w1b, w2a, w2b, alpha):
    return float(alpha) / w1b.shape[0] * (f64(w1a) @ f64(w1b)) * (f64(w2a) @ f64(w2b))


def lokr(w1, w2a, w2b, alpha):
    return float(alpha) / w2b.shape[0] * torch.kron(f64(w1), f64(w2a) @ f64(w2b))


def dora(w, delta, magnitude, strength):
    merged = w + delta
    out = f64(magnitude).reshape(-1, 1) * merged / merged.norm(dim=1, keepdim=True)
    return w + strength * (out - w)


def modules_of(sd, suffixes):
    """{module: {suffix: tensor}} for keys ending in one of `suffixes`."""
    out: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, t in sd.items():
        for suffix in sorted(suffixes, key=len, reverse=True):
            if key.endswith(suffix):
                out[key[: -len(suffix)]][suffix] = t
                break
    return out


KOHYA = (".lora_up.weight", ".lora_down.weight", ".alpha")


def underscore_index(keys, nest=""):
    return {
        (nest + k if not k.startswith(nest) else k).rsplit(".", 1)[0].replace(".", "_"): k.rsplit(".", 1)[0]
        for k in keys
    }


def ours(lora_file, base, strength_model=S, strength_clip=S):
    """Our patched tensors, keyed by patch key, float32."""
    model, clip = lora_file.at(strength_model, strength_clip)
    by_key = defaultdict(list)
    for p in model + clip:
        by_key[p.key].append(p)
    flat = {prefix + k: v for prefix, sd in base.items() for k, v in sd.items()}
    return {key: patched_weight(flat[key], patches) for key, patches in by_key.items()}, flat


def compare(got, ref, flat):
    """Every patched key equals the reference; every key the reference changes was patched."""
    changed = {k for k, v in ref.items() if v.shape != flat[k].shape or not torch.equal(v, f64(flat[k]))}
    assert changed <= set(got), sorted(changed - set(got))[:5]
    worst = max((got[k].double() - ref[k]).abs().max().item() for k in got)
    assert worst <= ATOL, worst
    return worst


def in_diffusers_layout(model_sd, deltas, strength):
    """BFL weights after adding per-diffusers-module deltas, via the layout converters (not LoRA code)."""
    d_sd = {k: f64(v) for k, v in bfl_to_diffusers_transformer(model_sd).items()}
    for module, delta in deltas.items():
        d_sd[f"{module}.weight"] = d_sd[f"{module}.weight"] + strength * delta
    return diffusers_to_bfl_transformer(d_sd)


def text_reference(sd, base, ref, strength):
    """kohya text-encoder parts (te1 = CLIP, te2/te3 = T5) onto the float64 reference."""
    clip_index = underscore_index(base["clip_l."], nest="text_model.")
    t5_index = underscore_index(base["t5xxl."])
    for name, parts in modules_of(sd, KOHYA).items():
        for prefix, index, key_prefix in (
            ("lora_te1_", clip_index, "clip_l."),
            ("lora_te3_", t5_index, "t5xxl."),
            ("lora_te2_", t5_index, "t5xxl."),
        ):
            if name.startswith(prefix):
                key = f"{key_prefix}{index[name[len(prefix) :]]}.weight"
                ref[key] = ref[key] + strength * lora(
                    parts[".lora_up.weight"], parts[".lora_down.weight"], parts[".alpha"]
                )


def reference(name, sd, metadata, base):
    """The float64 patched tensors for LoRA `name` at strength S (text encoders at S too)."""
    model = base[""]
    flat = {prefix + k: f64(v) for prefix, part in base.items() for k, v in part.items()}
    ref = dict(flat)
    if name in ("tiny-kohya", "tiny-kohya-split-qkv"):
        index = underscore_index(model)
        for module, parts in modules_of(sd, KOHYA).items():
            if module.startswith("lora_unet_"):
                key = index[module[len("lora_unet_") :]] + ".weight"
                ref[key] = ref[key] + S * lora(
                    parts[".lora_up.weight"], parts[".lora_down.weight"], parts[".alpha"]
                )
        text_reference(sd, base, ref, S)
    elif name == "tiny-comfyui":
        for module, parts in modules_of(
            sd, KOHYA + (".dora_scale", ".diff_b", ".diff", ".set_weight")
        ).items():
            m = module.removeprefix("diffusion_model.")
            if ".lora_up.weight" in parts:
                delta = lora(parts[".lora_up.weight"], parts[".lora_down.weight"], parts[".alpha"])
                w = ref[m + ".weight"]
                ref[m + ".weight"] = (
                    dora(w, delta, parts[".dora_scale"], S) if ".dora_scale" in parts else w + S * delta
                )
            if ".diff_b" in parts:
                ref[m + ".bias"] = ref[m + ".bias"] + S * f64(parts[".diff_b"])
            if ".diff" in parts:  # 1-D weights: BFL RMSNorm scales
                ref[m + ".scale"] = ref[m + ".scale"] + S * f64(parts[".diff"])
            if ".set_weight" in parts:
                ref[m + ".scale"] = ref[m + ".scale"] + S * (f64(parts[".set_weight"]) - ref[m + ".scale"])
    elif name == "tiny-xlabs":
        table = {
            "qkv_lora1": "img_attn.qkv",
            "proj_lora1": "img_attn.proj",
            "qkv_lora2": "txt_attn.qkv",
            "proj_lora2": "txt_attn.proj",
            "qkv_lora": "linear1",
            "proj_lora": "linear2",
        }
        for module, parts in modules_of(sd, (".down.weight", ".up.weight")).items():
            block, _, proc = module.partition(".processor.")
            key = f"{block}.{table[proc]}.weight"
            delta = lora(parts[".up.weight"], parts[".down.weight"])
            ref[key] = ref[key].clone()
            ref[key][: delta.shape[0]] += (
                S * delta
            )  # a single block's qkv LoRA covers linear1's first 3h rows
    elif name == "flux1-canny-dev-lora":
        for module, parts in modules_of(sd, (".lora_A.weight", ".lora_B.weight", ".lora_B.bias")).items():
            w = ref[module + ".weight"]
            down = f64(parts[".lora_A.weight"])
            if down.shape[1] > w.shape[1]:  # img_in widened to 128 inputs, new columns zero
                w = torch.cat((w, torch.zeros(w.shape[0], down.shape[1] - w.shape[1], dtype=w.dtype)), dim=1)
            ref[module + ".weight"] = w + S * f64(parts[".lora_B.weight"]) @ down
            ref[module + ".bias"] = ref[module + ".bias"] + S * f64(parts[".lora_B.bias"])
        for key, value in sd.items():
            if key.endswith("norm.scale"):
                ref[key] = ref[key] + S * (f64(value) - ref[key])
    else:  # formats in diffusers module names
        d_index = underscore_index(bfl_to_diffusers_transformer(model))
        deltas = {}
        if name == "tiny-diffusers":
            config = json.loads(metadata["lora_adapter_metadata"])
            alpha = config["transformer.lora_alpha"]
            for module, parts in modules_of(sd, (".lora_A.weight", ".lora_B.weight")).items():
                if module.startswith("transformer."):
                    deltas[module[len("transformer.") :]] = lora(
                        parts[".lora_B.weight"], parts[".lora_A.weight"], alpha
                    )
                else:  # text_encoder.text_model.<CLIP path>
                    clip_index = underscore_index(base["clip_l."], nest="text_model.")
                    key = "clip_l." + clip_index[module[len("text_encoder.") :].replace(".", "_")] + ".weight"
                    ref[key] = ref[key] + S * lora(parts[".lora_B.weight"], parts[".lora_A.weight"], alpha)
        elif name == "tiny-onetrainer":
            for module, parts in modules_of(sd, KOHYA).items():
                if module.startswith("lora_transformer_"):
                    deltas[d_index[module[len("lora_transformer_") :]]] = lora(
                        parts[".lora_up.weight"], parts[".lora_down.weight"], parts[".alpha"]
                    )
            text_reference(sd, base, ref, S)
        elif name == "tiny-loha":
            suffixes = (".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".alpha")
            for module, p in modules_of(sd, suffixes).items():
                deltas[d_index[module[len("lycoris_") :]]] = loha(
                    p[".hada_w1_a"], p[".hada_w1_b"], p[".hada_w2_a"], p[".hada_w2_b"], p[".alpha"]
                )
        elif name == "tiny-lokr":
            for module, p in modules_of(sd, (".lokr_w1", ".lokr_w2_a", ".lokr_w2_b", ".alpha")).items():
                deltas[d_index[module[len("lycoris_") :]]] = lokr(
                    p[".lokr_w1"], p[".lokr_w2_a"], p[".lokr_w2_b"], p[".alpha"]
                )
        ref.update(in_diffusers_layout(model, deltas, S))
    return ref


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TINY_LORAS))
def test_every_format_loads_with_zero_unmapped_keys_and_matches_float64(name, files, base, targets, caplog):
    with caplog.at_level(logging.WARNING, logger="models.lora.load"):
        loaded = load_lora(files[name], targets)
    assert loaded.unmapped == () and not caplog.records
    assert loaded.formats == EXPECTED_FORMAT[name]
    assert loaded.model
    from safetensors import safe_open

    with safe_open(str(files[name]), "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    assert detect_formats(sd) == EXPECTED_FORMAT[name]
    got, flat = ours(loaded, base)
    compare(got, reference(name, sd, metadata, base), flat)


def test_text_encoder_parts_are_clip_patches(files, targets):
    kohya = load_lora(files["tiny-kohya"], targets)
    assert {p.key.split(".")[0] for p in kohya.clip} == {"clip_l", "t5xxl"}
    assert all(not p.key.startswith(("clip_l.", "t5xxl.")) for p in kohya.model)
    onetrainer = load_lora(files["tiny-onetrainer"], targets)
    assert any(p.key.startswith("t5xxl.") for p in onetrainer.clip)  # lora_te2_ is T5 on FLUX
    # the tiny targets (meta-built modules) spell keys like the live encoders
    assert set(tiny_lora_targets().shapes) == set(targets.shapes)


def test_strength_zero_gives_exactly_the_base(files, base, targets):
    for name, path in files.items():
        loaded = load_lora(path, targets)
        got, flat = ours(loaded, base, 0.0, 0.0)
        for key, value in got.items():
            if value.shape == flat[key].shape:  # the control LoRA still widens img_in (zero columns)
                assert torch.equal(value, flat[key].float()), (name, key)
            else:
                assert torch.equal(value[:, : flat[key].shape[1]], flat[key].float())


def test_unmapped_and_mismatched_keys_are_reported(targets, caplog, tmp_path):
    up, down = torch.randn(8, 2), torch.randn(2, 128)
    sd = {
        "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight": torch.randn(128, 2),
        "lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": down,
        "lora_unet_double_blocks_9_img_attn_proj.lora_up.weight": up,  # no block 9
        "lora_unet_double_blocks_9_img_attn_proj.lora_down.weight": down,
        "lora_unet_double_blocks_1_img_attn_proj.lora_up.weight": up,  # 8 rows for a 128-row weight
        "lora_unet_double_blocks_1_img_attn_proj.lora_down.weight": down,
        "lora_unet_double_blocks_1_img_mlp_0.lora_up.weight": up,  # no down half
        "something_else.weight": torch.zeros(1),
    }
    result = convert_lora(sd, targets, source="odd.safetensors")
    assert [p.key for p in result.model] == ["double_blocks.0.img_attn.proj.weight"]
    text = "\n".join(result.unmapped)
    for fragment in (
        "double_blocks_9",
        "double_blocks.1.img_attn.proj.weight",
        "img_mlp_0",
        "something_else",
    ):
        assert fragment in text
    from safetensors.torch import save_file

    save_file({k: v.clone() for k, v in sd.items()}, str(tmp_path / "odd.safetensors"))
    with caplog.at_level(logging.WARNING, logger="models.lora.load"):
        load_lora(tmp_path / "odd.safetensors", targets)
    assert "5 keys not applied" in caplog.text and "something_else" in caplog.text


def test_generic_reshape_weight_and_peft_dora(targets, base):
    """ComfyUI's converted control LoRA spelling (`.reshape_weight`) and PEFT's DoRA magnitude."""
    up, down = torch.randn(128, 2) * 0.1, torch.randn(2, 128) * 0.1
    sd = {
        "diffusion_model.img_in.lora_up.weight": up,
        "diffusion_model.img_in.lora_down.weight": down,
        "diffusion_model.img_in.reshape_weight": torch.tensor([128, 128]),
        "transformer.proj_out.lora_A.weight": torch.randn(2, 128) * 0.1,
        "transformer.proj_out.lora_B.weight": torch.randn(64, 2) * 0.1,
        "transformer.proj_out.lora_magnitude_vector": torch.rand(64) + 0.5,
    }
    result = convert_lora(sd, targets)
    assert result.unmapped == ()
    got, flat = ours(result, base, 1.0, 1.0)
    w = torch.cat((f64(flat["img_in.weight"]), torch.zeros(128, 64, dtype=torch.float64)), dim=1)
    assert (got["img_in.weight"].double() - (w + lora(up, down))).abs().max() < 1e-5
    proj = f64(flat["final_layer.linear.weight"])
    delta = lora(sd["transformer.proj_out.lora_B.weight"], sd["transformer.proj_out.lora_A.weight"])
    ref = dora(proj, delta, sd["transformer.proj_out.lora_magnitude_vector"], 1.0)
    assert (got["final_layer.linear.weight"].double() - ref).abs().max() < 1e-5


def test_diffusers_norm_out_halves_are_swapped(targets):
    up, down = torch.randn(256, 2), torch.randn(2, 128)
    sd = {"transformer.norm_out.linear.lora_A.weight": down, "transformer.norm_out.linear.lora_B.weight": up}
    (patch,) = convert_lora(sd, targets).model
    assert patch.key == "final_layer.adaLN_modulation.1.weight"
    assert torch.equal(patch.tensor("up")[:128], up[128:]) and torch.equal(patch.tensor("up")[128:], up[:128])
