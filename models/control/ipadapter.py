"""XLabs' FLUX IP-Adapter (flux-ip-adapter.safetensors; flux-formats §9.1).

A CLIP ViT-L/14 image embedding [B, 768] becomes N image tokens (`ip_adapter_proj_model`: Linear to
N x 4096, LayerNorm); each double block i projects them to keys and values and adds
`ip_scale * SDPA(q_img, K_ip, V_ip)` to its image stream, with q_img the block's QK-normed image
queries before RoPE. Module names are the file's keys.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.formats.errors import WrongFamilyError
from models.formats.header import inspect_weights
from models.formats.lazy import Source, load_module

log = logging.getLogger(__name__)
PROJ_KEY = "ip_adapter_proj_model.proj.weight"
_BLOCK = re.compile(r"double_blocks\.(\d+)\.processor\.ip_adapter_double_stream_k_proj\.weight")


class ImageProjModel(nn.Module):
    """image_embeds [B, D_img] -> tokens [B, N, D_ctx]: Linear to N * D_ctx, reshape, LayerNorm."""

    def __init__(self, image_dim: int, context_dim: int, num_tokens: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.context_dim = context_dim
        self.proj = nn.Linear(image_dim, num_tokens * context_dim)
        self.norm = nn.LayerNorm(context_dim)

    def forward(self, image_embeds: Tensor) -> Tensor:
        x = self.proj(image_embeds.to(self.proj.weight.dtype))
        return self.norm(x.reshape(-1, self.num_tokens, self.context_dim))


class IPProcessor(nn.Module):
    """Per double block: keys and values of the image tokens (`processor.ip_adapter_double_stream_{k,v}_proj`)."""

    def __init__(self, context_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.ip_adapter_double_stream_k_proj = nn.Linear(context_dim, hidden_dim)
        self.ip_adapter_double_stream_v_proj = nn.Linear(context_dim, hidden_dim)


class IPBlock(nn.Module):
    def __init__(self, context_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.processor = IPProcessor(context_dim, hidden_dim)


class XLabsIPAdapter(nn.Module):
    """The whole adapter: the image projection and one IP processor per double block."""

    def __init__(
        self, image_dim: int, context_dim: int, num_tokens: int, hidden_dim: int, blocks: int
    ) -> None:
        super().__init__()
        self.ip_adapter_proj_model = ImageProjModel(image_dim, context_dim, num_tokens)
        self.double_blocks = nn.ModuleList(IPBlock(context_dim, hidden_dim) for _ in range(blocks))

    def image_tokens(self, image_embeds: Tensor) -> Tensor:
        """CLIP image embeddings [B, D_img] -> IP tokens [B, N, D_ctx]."""
        with torch.no_grad():
            return self.ip_adapter_proj_model(image_embeds)


class IPAttention:
    """The `models.flux.extensions.ExtraAttention` of one applied adapter (image tokens fixed, scale)."""

    def __init__(self, adapter: XLabsIPAdapter, tokens: Tensor, scale: float) -> None:
        self.adapter = adapter
        self.tokens = tokens
        self.scale = scale

    def __call__(self, index: int, img_q: Tensor, img: Tensor) -> Tensor:
        if index >= len(self.adapter.double_blocks) or self.scale == 0:
            return torch.zeros_like(img)
        block = self.adapter.double_blocks[index]
        assert isinstance(block, IPBlock)
        proc = block.processor
        weight = proc.ip_adapter_double_stream_k_proj.weight
        tokens = self.tokens.to(device=weight.device, dtype=weight.dtype)
        if tokens.shape[0] != img.shape[0]:
            tokens = (
                tokens.expand(img.shape[0], -1, -1)
                if tokens.shape[0] == 1
                else tokens.repeat(-(-img.shape[0] // tokens.shape[0]), 1, 1)[: img.shape[0]]
            )
        heads, head_dim = img_q.shape[1], img_q.shape[3]
        k = proc.ip_adapter_double_stream_k_proj(tokens).unflatten(-1, (heads, head_dim)).transpose(1, 2)
        v = proc.ip_adapter_double_stream_v_proj(tokens).unflatten(-1, (heads, head_dim)).transpose(1, 2)
        out = F.scaled_dot_product_attention(img_q.to(k.dtype), k, v)
        return (self.scale * out.transpose(1, 2).flatten(2)).to(img.dtype)


def load_xlabs_ipadapter(path: str | Path, *, compute_dtype: torch.dtype | None = None) -> XLabsIPAdapter:
    """An XLabsIPAdapter (eval) from XLabs' flux-ip-adapter file; widths and token count from the shapes."""
    path = Path(path)
    info = inspect_weights(path)
    if PROJ_KEY not in set(info):
        raise WrongFamilyError(path, "an XLabs FLUX IP-Adapter", "no ip_adapter_proj_model.proj.weight")
    out_features, image_dim = info.tensor(PROJ_KEY).shape
    context_dim = info.tensor("ip_adapter_proj_model.norm.weight").shape[0]
    blocks = sorted({int(m.group(1)) for k in info if (m := _BLOCK.match(k))})
    hidden = info.tensor("double_blocks.0.processor.ip_adapter_double_stream_k_proj.weight").shape[0]
    module = load_module(
        lambda: XLabsIPAdapter(image_dim, context_dim, out_features // context_dim, hidden, len(blocks)),
        Source(info),
        compute_dtype=compute_dtype,
    )
    log.info(
        "%s: loaded an XLabs IP-Adapter (%d tokens, %d blocks)",
        path,
        out_features // context_dim,
        len(blocks),
    )
    return module
