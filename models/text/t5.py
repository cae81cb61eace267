"""T5-XXL v1.1 encoder (google/t5-v1_1-xxl) as a transformers T5EncoderModel built from code.

Parameters come from a frozen preset or from a checkpoint's shapes; the module is built on the
meta device and its weights assigned from the file (see `models.text.loading`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn
from transformers import T5Config, T5EncoderModel

_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.")
REL_BIAS = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
PAD_ID = 0
EOS_ID = 1


@dataclass(frozen=True)
class T5EncoderParams:
    """Hyper-parameters of a gated-GELU T5 v1.1 encoder (pad id 0, EOS id 1, no BOS)."""

    vocab_size: int = 32128
    d_model: int = 4096
    d_kv: int = 64
    num_heads: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    num_buckets: int = 32
    max_distance: int = 128
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.d_model, self.d_kv, self.num_heads, self.d_ff, self.num_layers) < 1:
            raise ValueError(f"T5 sizes must be positive, got {self}")
        if self.vocab_size <= EOS_ID:
            raise ValueError(f"vocab_size {self.vocab_size} leaves no room for pad 0 and EOS 1")
        if self.num_buckets < 2 or self.max_distance < self.num_buckets // 2:
            raise ValueError(
                f"relative attention needs num_buckets >= 2 and max_distance >= num_buckets / 2, "
                f"got {self.num_buckets} and {self.max_distance}"
            )

    @property
    def width(self) -> int:
        """Size of each output token (4096 for T5-XXL): FLUX's context_in_dim."""
        return self.d_model


T5_XXL = T5EncoderParams()
# Fits the tiny T5 tokenizer from `write_tiny_tokenizers` (500 ids) with padding, like 32100 -> 32128.
T5_TINY = T5EncoderParams(vocab_size=512, d_model=64, d_kv=16, num_heads=4, d_ff=128, num_layers=2)


def t5_config(params: T5EncoderParams) -> T5Config:
    """The transformers config for `params` (no download)."""
    return T5Config(  # type: ignore[call-arg]  # accepted through PretrainedConfig's **kwargs
        vocab_size=params.vocab_size,
        d_model=params.d_model,
        d_kv=params.d_kv,
        d_ff=params.d_ff,
        num_layers=params.num_layers,
        num_heads=params.num_heads,
        relative_attention_num_buckets=params.num_buckets,
        relative_attention_max_distance=params.max_distance,
        layer_norm_epsilon=params.layer_norm_eps,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
    )


def build_t5(params: T5EncoderParams) -> T5EncoderModel:
    """A T5EncoderModel for `params` on the current default device (use `torch.device("meta")`)."""
    return T5EncoderModel(t5_config(params)).eval().requires_grad_(False)


def tie_embeddings(model: nn.Module) -> None:
    """Point the encoder's token embedding at `shared`: files store the table once, as `shared.weight`."""
    model.set_input_embeddings(model.get_input_embeddings())  # type: ignore[operator]  # a transformers model


def t5_params_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> T5EncoderParams:
    """Derive the hyper-parameters from a T5 encoder state dict's shapes.

    Heads and buckets come from the relative attention bias [buckets, heads] of block 0;
    max_distance is not stored and is 128 in every T5 v1.1.
    """
    embed = shapes.get("shared.weight") or shapes.get("encoder.embed_tokens.weight")
    try:
        if embed is None:
            raise KeyError("shared.weight")
        buckets, heads = shapes[REL_BIAS]
        inner = shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0]
        d_ff = shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0]
    except KeyError as exc:
        raise ValueError(f"not a gated T5 encoder state dict: missing {exc.args[0]!r}") from None
    blocks = {int(m.group(1)) for k in shapes if (m := _BLOCK.match(k))}
    if blocks != set(range(len(blocks))):
        raise ValueError(f"T5 encoder block indices are not contiguous: {sorted(blocks)}")
    if inner % heads:
        raise ValueError(f"T5 attention width {inner} is not divisible by {heads} heads")
    return T5EncoderParams(
        vocab_size=embed[0],
        d_model=embed[1],
        d_kv=inner // heads,
        num_heads=heads,
        d_ff=d_ff,
        num_layers=len(blocks),
        num_buckets=buckets,
    )
