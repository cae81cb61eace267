"""The FLUX ControlNet module (XLabs, Mistoline and InstantX/diffusers families) in BFL names.

Module names are the keys of XLabs files and of ComfyUI's conversion of diffusers files
(`controlnet_x_embedder` -> `pos_embed_input`), so loading needs only `models.formats.control_flux`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.flux.layers import DoubleStreamBlock, EmbedND, MLPEmbedder, SingleStreamBlock, timestep_embedding
from models.flux.packing import pack_latents

from .params import MISTOLINE, XLABS, ControlNetParams

# Conv layers of the pixel hint encoders: (in, out, kernel, stride); SiLU between consecutive convs.
_XLABS_HINT = (
    (3, 16, 3, 1),
    (16, 16, 3, 1),
    (16, 16, 3, 2),
    (16, 16, 3, 1),
    (16, 16, 3, 2),
    (16, 16, 3, 1),
    (16, 16, 3, 2),
    (16, 16, 3, 1),
)
_MISTOLINE_HINT = (
    (3, 16, 3, 1),
    (16, 16, 1, 1),
    (16, 16, 3, 1),
    (16, 16, 3, 2),
    (16, 16, 3, 1),
    (16, 16, 3, 2),
    (16, 16, 3, 1),
    (16, 16, 3, 2),
    (16, 16, 1, 1),
    (16, 16, 3, 1),
)


def _hint_encoder(layers: Sequence[tuple[int, int, int, int]]) -> nn.Sequential:
    """Convs (padding k // 2) with SiLU between them: [B, 3, H, W] -> [B, 16, H/8, W/8]; conv i sits at index 2i."""
    modules: list[nn.Module] = []
    for i, (cin, cout, k, stride) in enumerate(layers):
        if i:
            modules.append(nn.SiLU())
        modules.append(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2))
    return nn.Sequential(*modules)


class MistolineControlBlock(nn.Module):
    """Mistoline's zero block: Linear then SiLU (keys `controlnet_blocks.{i}.linear.*`)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.silu(self.linear(x))


class MistolineCondBlock(nn.Module):
    """Mistoline's hint encoder (keys `input_cond_block.encoder.{2i}.*`)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _hint_encoder(_MISTOLINE_HINT)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


@dataclass(frozen=True, eq=False)
class ControlResiduals:
    """Residuals of one ControlNet call, one per ControlNet block: [B, L_img, hidden] each."""

    double: tuple[Tensor, ...]
    single: tuple[Tensor, ...]


class FluxControlNet(nn.Module):
    """A reduced FLUX trunk that turns (noisy latent, hint, text, time) into per-block residuals.

    Built on the meta device and filled with `load_state_dict(..., assign=True)` like `Flux`.
    """

    def __init__(self, params: ControlNetParams) -> None:
        super().__init__()
        p = params.trunk
        self.params = params
        self.hidden_size = p.hidden_size
        self.pe_embedder = EmbedND(dim=p.head_dim, theta=p.theta, axes_dim=p.axes_dim)
        self.img_in = nn.Linear(p.in_channels, p.hidden_size)
        self.time_in = MLPEmbedder(256, p.hidden_size)
        self.vector_in = MLPEmbedder(p.vec_in_dim, p.hidden_size)
        self.guidance_in = MLPEmbedder(256, p.hidden_size) if p.guidance_embed else nn.Identity()
        self.txt_in = nn.Linear(p.context_in_dim, p.hidden_size)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(p.hidden_size, p.num_heads, p.mlp_ratio, p.qkv_bias) for _ in range(p.depth)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(p.hidden_size, p.num_heads, p.mlp_ratio) for _ in range(p.depth_single_blocks)
        )
        block = (
            (lambda: MistolineControlBlock(p.hidden_size))
            if params.kind == MISTOLINE
            else (lambda: nn.Linear(p.hidden_size, p.hidden_size))
        )
        self.controlnet_blocks = nn.ModuleList(block() for _ in range(p.depth))
        self.controlnet_single_blocks = nn.ModuleList(block() for _ in range(p.depth_single_blocks))
        self.pos_embed_input = nn.Linear(params.hint_channels * 4, p.hidden_size)
        if params.num_modes:
            self.controlnet_mode_embedder = nn.Embedding(params.num_modes, p.hidden_size)
        if params.kind == XLABS:
            self.input_hint_block = _hint_encoder(_XLABS_HINT)
        elif params.kind == MISTOLINE:
            self.input_cond_block = MistolineCondBlock()

    def hint_tokens(self, hint: Tensor) -> Tensor:
        """Prepared hint -> packed hint features [B, L, hint_channels * 4].

        Pixel-hint models take the image [B, 3, 8h, 8w] in 0..1; latent models take the model-space
        latent (plus mask channel) [B, hint_channels, h, w] with even h, w.
        """
        if not self.params.latent_input:
            encoder = self.input_cond_block if self.params.kind == MISTOLINE else self.input_hint_block
            dtype = self.pos_embed_input.weight.dtype
            hint = encoder(hint.to(dtype) * 2.0 - 1.0)
        return pack_latents(hint)

    def forward(
        self,
        img: Tensor,
        img_ids: Tensor,
        hint: Tensor,
        txt: Tensor,
        txt_ids: Tensor,
        timesteps: Tensor,
        y: Tensor,
        guidance: Tensor | None = None,
        modes: Sequence[int] = (),
    ) -> ControlResiduals:
        """Residuals for packed image tokens.

        Args:
            img: [B, L, in_channels] packed noisy latent (model space); img_ids [B, L, 3].
            hint: [B, L, hint_channels * 4] from `hint_tokens`.
            txt: [B, T, context_in_dim]; txt_ids [B, T, 3]; timesteps [B] flow time in 0..1;
            y: [B, vec_in_dim]; guidance: [B] or None.
            modes: Union mode indices; each becomes one token in front of the text (none: no token).
        """
        trunk = self.params.trunk
        img = self.img_in(img)
        dtype = img.dtype
        img = img + self.pos_embed_input(hint.to(dtype))
        vec = self.time_in(timestep_embedding(timesteps, 256).to(dtype))
        if trunk.guidance_embed and guidance is not None:
            vec = vec + self.guidance_in(timestep_embedding(guidance, 256).to(dtype))
        vec = vec + self.vector_in(y.to(dtype))
        txt = self.txt_in(txt.to(dtype))
        if modes and self.params.num_modes:
            index = torch.tensor(list(modes), device=img.device, dtype=torch.long)
            tokens = self.controlnet_mode_embedder(index).to(dtype).unsqueeze(0).expand(txt.shape[0], -1, -1)
            txt = torch.cat((tokens, txt), dim=1)
            txt_ids = torch.cat((txt_ids[:, :1].expand(-1, len(modes), -1), txt_ids), dim=1)
        pe = self.pe_embedder(torch.cat((txt_ids, img_ids), dim=1))
        double = []
        for block, control in zip(self.double_blocks, self.controlnet_blocks):
            img, txt = block(img, txt, vec, pe)
            double.append(control(img))
        n_txt = txt.shape[1]
        x = torch.cat((txt, img), dim=1)
        single = []
        for block, control in zip(self.single_blocks, self.controlnet_single_blocks):
            x = block(x, vec, pe)
            single.append(control(x[:, n_txt:]))
        return ControlResiduals(tuple(double), tuple(single))


def spread(residuals: Sequence[Tensor], blocks: int, cyclic: bool) -> tuple[Tensor | None, ...]:
    """One residual per main-model block: cyclic (XLabs: block i gets r[i mod n]) or by interval
    (diffusers: block i gets r[i // ceil(blocks / n)]); () when there are no residuals."""
    n = len(residuals)
    if not n or not blocks:
        return ()
    if cyclic:
        return tuple(residuals[i % n] for i in range(blocks))
    interval = -(-blocks // n)
    return tuple(residuals[i // interval] if i // interval < n else None for i in range(blocks))
