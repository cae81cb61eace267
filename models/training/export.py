"""A trained LoRA (the tensors `adapters.lora_state_dict` writes) as model patches for a MODEL handle."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from models.patches import WeightPatch

SUFFIXES = {
    "lora": ("lora_up.weight", "lora_down.weight"),
    "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
    "lokr": ("lokr_w1", "lokr_w2_a", "lokr_w2_b"),
    "oft": ("oft_blocks",),
}
SLOTS = {
    "lora": ("up", "down"),
    "loha": ("w1a", "w1b", "w2a", "w2b"),
    "lokr": ("w1", "w2a", "w2b"),
    "oft": ("blocks",),  # alpha: the rotation's constraint (models.lora.oft)
}


def module_names(tensors: Mapping[str, Tensor]) -> dict[str, str]:
    """BFL module path -> file prefix, for `diffusion_model.<path>.alpha` keys (ComfyUI generic form)."""
    out = {}
    for key in tensors:
        if key.endswith(".alpha") and key.startswith("diffusion_model."):
            prefix = key[: -len(".alpha")]
            out[prefix[len("diffusion_model.") :]] = prefix
    return out


def lora_patches(
    tensors: Mapping[str, Tensor], strength: float = 1.0, source: str = ""
) -> tuple[WeightPatch, ...]:
    """One lora / loha / lokr / oft WeightPatch per module of a ComfyUI-keyed trained LoRA.

    Raises KeyError naming keys that belong to no module (nothing is dropped silently).
    """
    patches, used = [], set()
    for module, prefix in module_names(tensors).items():
        for kind, suffixes in SUFFIXES.items():
            keys = [f"{prefix}.{s}" for s in suffixes]
            if all(k in tensors for k in keys):
                patches.append(
                    WeightPatch(
                        f"{module}.weight",
                        kind,
                        tuple(tensors[k] for k in keys),
                        strength=strength,
                        source=source,
                        slots=SLOTS[kind],
                        alpha=float(tensors[f"{prefix}.alpha"]),
                    )
                )
                used.update(keys)
                used.add(f"{prefix}.alpha")
                break
        else:
            raise KeyError(f"LoRA module {prefix} has no complete lora / loha / lokr / oft tensors")
    left = sorted(set(tensors) - used)
    if left:
        raise KeyError(f"LoRA keys not understood: {left[:10]}")
    return tuple(patches)


def to_key_style(tensors: Mapping[str, Tensor], style: str) -> dict[str, Tensor]:
    """ComfyUI-keyed LoRA tensors in another file convention.

    comfyui: unchanged; kohya: `lora_unet_<path with _>`; diffusers: PEFT keys on diffusers module
    names (`transformer.<module>.lora_A.weight` / `.lora_B.weight`), fused BFL targets split per
    diffusers Linear (lora_A shared, lora_B rows split) and alpha / rank baked into lora_B, as
    diffusers' `load_lora_weights` expects (LoRA only).
    """
    if style == "comfyui":
        return dict(tensors)
    if style == "kohya":
        out = {}
        for key, t in tensors.items():
            module, _, suffix = key.removeprefix("diffusion_model.").partition(".lora_")
            if suffix:
                out[f"lora_unet_{module.replace('.', '_')}.lora_{suffix}"] = t
            else:
                module, _, param = key.removeprefix("diffusion_model.").rpartition(".")
                out[f"lora_unet_{module.replace('.', '_')}.{param}"] = t
        return out
    if style != "diffusers":
        raise ValueError(f"unknown LoRA key style {style!r}")
    from models.formats.diffusers_flux import bfl_to_diffusers_transformer

    out = {}
    for module, prefix in module_names(tensors).items():
        up_key, down_key = f"{prefix}.lora_up.weight", f"{prefix}.lora_down.weight"
        if up_key not in tensors:
            raise ValueError(f"{prefix}: only LoRA (not LoHa / LoKr / OFT) exports to diffusers keys")
        up, down = tensors[up_key].float(), tensors[down_key]
        up = up * (float(tensors[f"{prefix}.alpha"]) / down.shape[0])
        if module.endswith(".linear1"):
            # split as a bias (rows), with linear2's row count telling the converter the hidden size
            hidden = _single_hidden(tensors, module)
            parts = {
                f"{module}.bias": up,
                module.replace(".linear1", ".linear2") + ".weight": up.new_empty(hidden, 1),
            }
        else:
            parts = {f"{module}.weight": up}
        for key, piece in bfl_to_diffusers_transformer(parts).items():
            target, _, param = key.rpartition(".")
            if module.endswith(".linear1") and param != "bias":
                continue
            out[f"transformer.{target}.lora_A.weight"] = down.clone()
            out[f"transformer.{target}.lora_B.weight"] = piece.to(tensors[up_key].dtype).contiguous()
    return out


def _single_hidden(tensors: Mapping[str, Tensor], linear1: str) -> int:
    """Hidden size of a single block from its LoRA tensors (linear1 rows = 3 hidden + mlp = 7 hidden)."""
    up = tensors[f"diffusion_model.{linear1}.lora_up.weight"]
    down = tensors[f"diffusion_model.{linear1}.lora_down.weight"]
    hidden = int(down.shape[1])
    if up.shape[0] % hidden:
        raise ValueError(f"{linear1}: cannot infer the hidden size")
    return hidden
