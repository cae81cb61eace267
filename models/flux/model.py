"""The FLUX.1 transformer (dev / schnell / Krea / Kontext / Fill / Canny / Depth) in the BFL layout."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .extensions import NO_EXTENSIONS, FluxExtensions, TokenState, residual_for
from .layers import DoubleStreamBlock, EmbedND, LastLayer, MLPEmbedder, SingleStreamBlock, timestep_embedding
from .params import FluxParams


class Flux(nn.Module):
    """Flow-matching transformer on packed latent tokens; `state_dict()` keys equal the BFL checkpoint's.

    Builds no tensors beyond parameters, so it can be made under `torch.device("meta")` and filled
    with `load_state_dict(..., assign=True)`.
    """

    def __init__(self, params: FluxParams) -> None:
        super().__init__()
        self.params = params
        self.in_channels = params.in_channels
        self.out_channels = params.out_channels
        self.hidden_size = params.hidden_size
        self.num_heads = params.num_heads
        self.pe_embedder = EmbedND(dim=params.head_dim, theta=params.theta, axes_dim=params.axes_dim)
        self.img_in = nn.Linear(params.in_channels, params.hidden_size, bias=True)
        self.time_in = MLPEmbedder(256, params.hidden_size)
        self.vector_in = MLPEmbedder(params.vec_in_dim, params.hidden_size)
        self.guidance_in = MLPEmbedder(256, params.hidden_size) if params.guidance_embed else nn.Identity()
        self.txt_in = nn.Linear(params.context_in_dim, params.hidden_size)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(params.hidden_size, params.num_heads, params.mlp_ratio, params.qkv_bias)
            for _ in range(params.depth)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(params.hidden_size, params.num_heads, params.mlp_ratio)
            for _ in range(params.depth_single_blocks)
        )
        self.final_layer = LastLayer(params.hidden_size, params.out_channels)

    def forward(
        self,
        img: Tensor,
        img_ids: Tensor,
        txt: Tensor,
        txt_ids: Tensor,
        timesteps: Tensor,
        y: Tensor,
        guidance: Tensor | None = None,
        extensions: FluxExtensions | None = None,
    ) -> Tensor:
        """Velocity for packed image tokens.

        Args:
            img: [B, L, in_channels] packed latents (plus channel-concat conditioning for Fill/Canny/Depth).
            img_ids: [B, L, 3] float positions (index, row, column) in token units.
            txt: [B, T, context_in_dim] T5 hidden states.
            txt_ids: [B, T, 3] (zeros for plain text).
            timesteps: [B] flow time in 0..1 (the x1000 is inside the embedding).
            y: [B, vec_in_dim] CLIP pooled output.
            guidance: [B] distilled guidance (e.g. 3.5); None skips the guidance term. Ignored by
                models without a guidance embedding (schnell).
            extensions: ControlNet residuals, IP-Adapter attention, token hook, attention mask.

        Returns: [B, L, out_channels] in img_in's output dtype.
        """
        if img.ndim != 3 or txt.ndim != 3:
            raise ValueError(
                f"img and txt must be [B, L, C] token tensors, got shapes {tuple(img.shape)} "
                f"and {tuple(txt.shape)}"
            )
        width = self.img_in.weight.shape[-1]  # not params: a Canny/Depth LoRA widens img_in
        if img.shape[-1] != width:
            raise ValueError(f"img has {img.shape[-1]} features per token, the model takes {width}")
        ext = extensions if extensions is not None else NO_EXTENSIONS
        n_img = img.shape[1]
        img = self.img_in(img)
        dtype = img.dtype
        vec = self.time_in(timestep_embedding(timesteps, 256).to(dtype))
        if self.params.guidance_embed and guidance is not None:
            vec = vec + self.guidance_in(timestep_embedding(guidance, 256).to(dtype))
        vec = vec + self.vector_in(y.to(dtype))
        txt = self.txt_in(txt.to(dtype))
        if ext.token_hook is not None:
            state = ext.token_hook(TokenState(img=img, txt=txt, img_ids=img_ids, txt_ids=txt_ids, vec=vec))
            img, txt, img_ids, txt_ids, vec = state.img, state.txt, state.img_ids, state.txt_ids, state.vec
        pe = self.pe_embedder(torch.cat((txt_ids, img_ids), dim=1))
        mask = ext.attention_mask

        depth = len(self.double_blocks)
        for i, block in enumerate(self.double_blocks):
            hooks = tuple(partial(hook, i) for hook in ext.double_attention)
            img, txt = block(img, txt, vec, pe, mask, hooks)
            residual = residual_for(ext.double_residuals, i, depth, ext.cyclic_double_residuals)
            if residual is not None:
                img = _add_residual(img, residual, 0)

        n_txt = txt.shape[1]
        x = torch.cat((txt, img), dim=1)
        depth = len(self.single_blocks)
        for i, block in enumerate(self.single_blocks):
            x = block(x, vec, pe, mask)
            residual = residual_for(ext.single_residuals, i, depth, cyclic=False)
            if residual is not None:
                x = _add_residual(x, residual, n_txt)
        return self.final_layer(x[:, n_txt : n_txt + n_img], vec)


def _add_residual(x: Tensor, residual: Tensor, start: int) -> Tensor:
    """x + residual on tokens start .. start+len(residual) (out of place, autograd-safe)."""
    n = residual.shape[1]
    if start + n > x.shape[1]:
        raise ValueError(f"control residual has {n} tokens, only {x.shape[1] - start} image tokens exist")
    return x + F.pad(residual.to(x.dtype), (0, 0, start, x.shape[1] - start - n))
