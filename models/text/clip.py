"""CLIP-L text tower (openai/clip-vit-large-patch14) as a transformers CLIPTextModel built from code.

Parameters come from a frozen preset or from a checkpoint's shapes; the module is built on the
meta device and its weights assigned from the file (see `models.text.loading`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

# Released CLIP text towers all use 64-wide heads; the head count is not visible in the shapes.
CLIP_HEAD_DIM = 64
FILE_PREFIX = "text_model."  # every CLIP text file (ComfyUI, diffusers, HF) nests the tower here
_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.")


@dataclass(frozen=True)
class ClipTextParams:
    """Hyper-parameters of a CLIP text tower; token ids are the tokenizer's BOS/EOS (EOS also pads)."""

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    max_positions: int = 77
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if (
            min(
                self.vocab_size, self.hidden_size, self.intermediate_size, self.num_layers, self.max_positions
            )
            < 1
        ):
            raise ValueError(f"CLIP sizes must be positive, got {self}")
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"{name} {value} is outside the vocabulary (size {self.vocab_size})")

    @property
    def width(self) -> int:
        """Size of the pooled output (768 for CLIP-L)."""
        return self.hidden_size


CLIP_L = ClipTextParams()
# Matches the tiny CLIP tokenizer from `write_tiny_tokenizers` (768 ids, BOS 766, EOS 767).
CLIP_TINY = ClipTextParams(
    vocab_size=768,
    hidden_size=128,
    intermediate_size=256,
    num_layers=2,
    num_heads=2,
    bos_token_id=766,
    eos_token_id=767,
)


def clip_config(params: ClipTextParams) -> CLIPTextConfig:
    """The transformers config for `params` (no download)."""
    return CLIPTextConfig(
        vocab_size=params.vocab_size,
        hidden_size=params.hidden_size,
        intermediate_size=params.intermediate_size,
        num_hidden_layers=params.num_layers,
        num_attention_heads=params.num_heads,
        max_position_embeddings=params.max_positions,
        hidden_act=params.hidden_act,
        layer_norm_eps=params.layer_norm_eps,
        bos_token_id=params.bos_token_id,
        eos_token_id=params.eos_token_id,
        pad_token_id=params.eos_token_id,
        projection_dim=params.hidden_size,
    )


def build_clip(params: ClipTextParams) -> CLIPTextModel:
    """A CLIPTextModel for `params` on the current default device (use `torch.device("meta")`)."""
    return CLIPTextModel(clip_config(params)).eval().requires_grad_(False)


def is_nested(model: nn.Module) -> bool:
    """Whether the CLIPTextModel keeps `text_model.` in its own keys (transformers 4) or not (5)."""
    return hasattr(model, "text_model")


def materialize_buffers(model: nn.Module) -> None:
    """Create the non-persistent `position_ids` buffer that meta construction left empty."""
    for module in model.modules():
        buffer = getattr(module, "position_ids", None)
        if isinstance(buffer, torch.Tensor) and buffer.is_meta:
            n = buffer.shape[-1]
            device = next((p.device for p in module.parameters() if not p.is_meta), torch.device("cpu"))
            module.register_buffer(
                "position_ids", torch.arange(n, device=device).expand(1, -1), persistent=False
            )


def clip_params_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> ClipTextParams:
    """Derive the hyper-parameters from a CLIP text state dict's shapes (keys without `text_model.`).

    heads = width / 64 (true for every released CLIP); BOS/EOS are the last two ids, as in CLIP's BPE.
    """
    shapes = {k.removeprefix(FILE_PREFIX): v for k, v in shapes.items()}
    try:
        vocab, width = shapes["embeddings.token_embedding.weight"]
        positions = shapes["embeddings.position_embedding.weight"][0]
        intermediate = shapes["encoder.layers.0.mlp.fc1.weight"][0]
    except KeyError as exc:
        raise ValueError(f"not a CLIP text state dict: missing {exc.args[0]!r}") from None
    layers = {int(m.group(1)) for k in shapes if (m := _LAYER.match(k))}
    if layers != set(range(len(layers))):
        raise ValueError(f"CLIP encoder layer indices are not contiguous: {sorted(layers)}")
    if width % CLIP_HEAD_DIM:
        raise ValueError(f"CLIP width {width} is not a multiple of the head size {CLIP_HEAD_DIM}")
    return ClipTextParams(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=intermediate,
        num_layers=len(layers),
        num_heads=width // CLIP_HEAD_DIM,
        max_positions=positions,
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
    )
