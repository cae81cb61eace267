"""A trained LoRA (the tensors `adapters.lora_state_dict` writes) as model patches for a MODEL handle."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from models.patches import WeightPatch

SUFFIXES = {
    "lora": ("lora_up.weight", "lora_down.weight"),
    "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
    "lokr": ("lokr_w1", "lokr_w2_a", "lokr_w2_b"),
}
SLOTS = {"lora": ("up", "down"), "loha": ("w1a", "w1b", "w2a", "w2b"), "lokr": ("w1", "w2a", "w2b")}


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
    """One lora / loha / lokr WeightPatch per module of a ComfyUI-keyed trained LoRA.

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
            raise KeyError(f"LoRA module {prefix} has no complete lora / loha / lokr tensors")
    left = sorted(set(tensors) - used)
    if left:
        raise KeyError(f"LoRA keys not understood: {left[:10]}")
    return tuple(patches)
