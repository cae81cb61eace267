"""FLUX prompt encoding as ComfyUI's CLIPTextEncode / CLIPTextEncodeFlux do it.

- CLIP-L gives the pooled vector: the final-layer-normed hidden state at the first EOS of the
  first 77-token chunk, without the text projection. FLUX uses nothing else from CLIP, so later
  chunks of a long prompt are not encoded (ComfyUI encodes them and keeps only chunk 0's pooled).
  Emphasis weights do not change it (ComfyUI applies weights to hidden states only).
- T5 gives the context: last_hidden_state of one unsplit sequence (tokens, EOS, pad 0 up to 256).
  No attention mask: pad tokens are attended to, as in ComfyUI, BFL and diffusers. Tokens with a
  weight w != 1 become `empty + (z - empty) * w`, where `empty` is the encoding of [EOS, pad, ...]
  of the same length.
- Empty prompt: CLIP [BOS, EOS, EOS...], T5 [EOS, pad...] (256 tokens): nothing special-cased.
- Sequence length: ComfyUI pads T5 to at least 256 and never truncates, for every FLUX variant.
  `t5_max_length` (e.g. `t5_max_length_for("dev")` = 512) caps it, BFL/diffusers style; with
  `t5_min_length` equal to it the sequence is exactly that long, as in the BFL reference code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import MissingTextEncoderError
from .prompt import (
    T5_MIN_LENGTH,
    SpecialTokens,
    TokenizeFn,
    empty_tokens,
    tokenize_clip,
    tokenize_t5,
)

SCHNELL_T5_LENGTH = 256
DEV_T5_LENGTH = 512


@dataclass(frozen=True, eq=False)
class TextEncoders:
    """The FLUX text encoders with their tokenizers; either pair may be missing.

    clip: a CLIPTextModel (CLIP-L, or tiny); t5: a T5EncoderModel. Tokenizers are transformers
    tokenizers (anything callable as `tok(text)["input_ids"]`).
    """

    clip: nn.Module | None = None
    t5: nn.Module | None = None
    clip_tokenizer: Any = None
    t5_tokenizer: Any = None


def t5_max_length_for(variant: str) -> int:
    """The T5 length BFL uses for a FLUX.1 variant: 256 for schnell, 512 for dev and its relatives."""
    return SCHNELL_T5_LENGTH if "schnell" in variant.lower() else DEV_T5_LENGTH


def _ids_of(tokenizer: Any) -> TokenizeFn:
    return lambda text: tokenizer(text)["input_ids"]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_clip_pooled(model: nn.Module, tokenizer: Any, text: str) -> torch.Tensor:
    """CLIP pooled output of `text`: float32 [1, width] on the CPU (768 for CLIP-L)."""
    chunk = tokenize_clip(_ids_of(tokenizer), text)[0]
    ids = torch.tensor([[t for t, _ in chunk]], device=_device(model))
    return model(input_ids=ids).pooler_output.float().cpu()


@torch.no_grad()
def encode_t5(
    model: nn.Module,
    tokenizer: Any,
    text: str,
    *,
    min_length: int = T5_MIN_LENGTH,
    max_length: int | None = None,
) -> torch.Tensor:
    """T5 hidden states of `text`: float32 [1, T, width] on the CPU, T >= min_length (see module doc)."""
    tokenize = _ids_of(tokenizer)
    tokens = tokenize_t5(tokenize, text, min_length=min_length, max_length=max_length)
    ids = [t for t, _ in tokens]
    weights = torch.tensor([w for _, w in tokens], dtype=torch.float32)
    weighted = bool((weights != 1.0).any())
    batch = [ids]
    if weighted:
        batch.append(empty_tokens(SpecialTokens.of(tokenize, has_start=False, pad_with_end=False), len(ids)))
    out = model(input_ids=torch.tensor(batch, device=_device(model))).last_hidden_state.float().cpu()
    z = out[:1]
    if weighted:
        empty, w = out[1:], weights[None, :, None]
        z = torch.where(w != 1.0, empty + (z - empty) * w, z)
    return z


def encode_flux_prompt(
    encoders: TextEncoders,
    clip_text: str,
    t5_text: str,
    *,
    t5_max_length: int | None = None,
    t5_min_length: int = T5_MIN_LENGTH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(context float32 [1, T, t5 width], pooled float32 [1, clip width]), both on the CPU.

    T = max(t5_min_length, tokens + 1), capped by t5_max_length when given (module doc).
    Raises MissingTextEncoderError when a model or tokenizer is absent.
    """
    missing = [
        name for name in ("clip", "t5", "clip_tokenizer", "t5_tokenizer") if getattr(encoders, name) is None
    ]
    if missing:
        raise MissingTextEncoderError(
            f"FLUX prompts need CLIP-L and T5 with their tokenizers; missing: {', '.join(missing)}"
        )
    assert encoders.t5 is not None and encoders.clip is not None  # checked just above
    context = encode_t5(
        encoders.t5, encoders.t5_tokenizer, t5_text, min_length=t5_min_length, max_length=t5_max_length
    )
    pooled = encode_clip_pooled(encoders.clip, encoders.clip_tokenizer, clip_text)
    return context, pooled
