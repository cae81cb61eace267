"""Building blocks of the FLUX.1 transformer; attribute names are the BFL checkpoint keys."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .math import attention, rope

ImageHook = Callable[[Tensor, Tensor], Tensor]  # (img_q [B,H,L,D], img [B,L,hidden]) -> delta for img


def timestep_embedding(
    t: Tensor, dim: int = 256, max_period: int = 10_000, time_factor: float = 1000.0
) -> Tensor:
    """Sinusoidal embedding of t [B] (flow time in 0..1, scaled by `time_factor`) -> float32 [B, dim], cos first.

    float32 even for float64 t, as the reference computes it (angles reach 1000 rad).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (time_factor * t.float()).unsqueeze(-1) * freqs
    emb = torch.cat((torch.cos(args), torch.sin(args)), dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class EmbedND(nn.Module):
    """Position ids [B, L, n_axes] -> RoPE rotations complex64 [B, 1, L, sum(axes_dim)/2]. No weights."""

    def __init__(self, dim: int, theta: int, axes_dim: Sequence[int]) -> None:
        super().__init__()
        self.dim = dim
        self.theta = theta
        self.axes_dim = tuple(axes_dim)

    def forward(self, ids: Tensor) -> Tensor:
        if ids.shape[-1] != len(self.axes_dim):
            raise ValueError(f"position ids have {ids.shape[-1]} axes, the model has {len(self.axes_dim)}")
        parts = [rope(ids[..., i], d, self.theta) for i, d in enumerate(self.axes_dim)]
        return torch.cat(parts, dim=-1).unsqueeze(1)


class MLPEmbedder(nn.Module):
    """Linear -> SiLU -> Linear: [..., in_dim] -> [..., hidden_dim]."""

    def __init__(self, in_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_dim, bias=True)
        self.silu = nn.SiLU()
        self.out_layer = nn.Linear(hidden_dim, hidden_dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_layer(self.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    """RMS norm over the last dim (eps 1e-6, statistics in fp32) times the learned `scale`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float32, torch.float64) and self.scale.dtype == x.dtype:
            return F.rms_norm(x, (x.shape[-1],), self.scale, eps=1e-6)  # one pass, same math
        # low precision: round the normalised value to x's dtype before scaling, as the reference does
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=1e-6).to(x.dtype)
        return normed * self.scale.to(x.dtype)


class QKNorm(nn.Module):
    """RMS-normalises queries and keys per head; returns them in v's dtype."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.query_norm(q).to(v.dtype), self.key_norm(k).to(v.dtype)


class SelfAttention(nn.Module):
    """Fused qkv projection, QK-norm and output projection of one stream (weights only; see blocks)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm = QKNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, L, dim] -> normed q, k and v, each [B, heads, L, head_dim]."""
        return split_heads(self.qkv(x), self.num_heads, self.norm)


def split_heads(qkv: Tensor, num_heads: int, norm: QKNorm) -> tuple[Tensor, Tensor, Tensor]:
    """Fused qkv [B, L, 3*H*D] (rows q | k | v, heads inside) -> QK-normed q, k and v [B, H, L, D]."""
    q, k, v = qkv.unflatten(-1, (3, num_heads, -1)).permute(2, 0, 3, 1, 4)  # K B H L D
    q, k = norm(q, k, v)
    return q, k, v


@dataclass(frozen=True)
class ModulationOut:
    """One adaLN triple, each [B, 1, dim]: x -> (1 + scale) * norm(x) + shift, gated by gate."""

    shift: Tensor
    scale: Tensor
    gate: Tensor

    def modulate(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.shift, x, 1 + self.scale)


class Modulation(nn.Module):
    """SiLU(vec) -> Linear(dim, 6*dim or 3*dim) -> (shift, scale, gate) x 2 (double) or x 1 (single)."""

    def __init__(self, dim: int, double: bool) -> None:
        super().__init__()
        self.is_double = double
        self.multiplier = 6 if double else 3
        self.lin = nn.Linear(dim, self.multiplier * dim, bias=True)

    def forward(self, vec: Tensor) -> tuple[ModulationOut, ModulationOut | None]:
        out = self.lin(F.silu(vec)).unsqueeze(1).chunk(self.multiplier, dim=-1)
        return ModulationOut(*out[:3]), ModulationOut(*out[3:]) if self.is_double else None


def _mlp(hidden: int, mlp_hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(hidden, mlp_hidden, bias=True),
        nn.GELU(approximate="tanh"),
        nn.Linear(mlp_hidden, hidden, bias=True),
    )


class DoubleStreamBlock(nn.Module):
    """Separate weights per stream (img, txt), joint attention over [txt ; img]."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, qkv_bias: bool = False) -> None:
        super().__init__()
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.num_heads = num_heads
        self.hidden_size = hidden_size
        self.img_mod = Modulation(hidden_size, double=True)
        self.img_norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.img_attn = SelfAttention(hidden_size, num_heads, qkv_bias=qkv_bias)
        self.img_norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.img_mlp = _mlp(hidden_size, mlp_hidden)
        self.txt_mod = Modulation(hidden_size, double=True)
        self.txt_norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.txt_attn = SelfAttention(hidden_size, num_heads, qkv_bias=qkv_bias)
        self.txt_norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.txt_mlp = _mlp(hidden_size, mlp_hidden)

    def forward(
        self,
        img: Tensor,
        txt: Tensor,
        vec: Tensor,
        pe: Tensor,
        mask: Tensor | None = None,
        image_hooks: Sequence[ImageHook] = (),
    ) -> tuple[Tensor, Tensor]:
        """img [B, L, hidden], txt [B, T, hidden], vec [B, hidden], pe [B, 1, T+L, D/2] -> (img, txt)."""
        img_mod1, img_mod2 = self.img_mod(vec)
        txt_mod1, txt_mod2 = self.txt_mod(vec)
        img_q, img_k, img_v = self.img_attn.heads(img_mod1.modulate(self.img_norm1(img)))
        txt_q, txt_k, txt_v = self.txt_attn.heads(txt_mod1.modulate(self.txt_norm1(txt)))
        attn = attention(
            torch.cat((txt_q, img_q), dim=2),
            torch.cat((txt_k, img_k), dim=2),
            torch.cat((txt_v, img_v), dim=2),
            pe,
            mask,
        )
        txt_attn, img_attn = attn.split((txt.shape[1], img.shape[1]), dim=1)
        assert img_mod2 is not None and txt_mod2 is not None
        # addcmul: gated residual in one pass (x + gate * y)
        img = torch.addcmul(img, img_mod1.gate, self.img_attn.proj(img_attn))
        img = torch.addcmul(img, img_mod2.gate, self.img_mlp(img_mod2.modulate(self.img_norm2(img))))
        txt = torch.addcmul(txt, txt_mod1.gate, self.txt_attn.proj(txt_attn))
        txt = torch.addcmul(txt, txt_mod2.gate, self.txt_mlp(txt_mod2.modulate(self.txt_norm2(txt))))
        for hook in image_hooks:
            img = img + hook(img_q, img)
        return img, txt


class SingleStreamBlock(nn.Module):
    """Parallel attention + MLP on the joint sequence: one linear in (qkv | mlp), one linear out."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.mlp_hidden_dim = int(hidden_size * mlp_ratio)
        self.linear1 = nn.Linear(hidden_size, hidden_size * 3 + self.mlp_hidden_dim)
        self.linear2 = nn.Linear(hidden_size + self.mlp_hidden_dim, hidden_size)
        self.norm = QKNorm(hidden_size // num_heads)
        self.pre_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp_act = nn.GELU(approximate="tanh")
        self.modulation = Modulation(hidden_size, double=False)

    def forward(self, x: Tensor, vec: Tensor, pe: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [B, T+L, hidden], vec [B, hidden], pe [B, 1, T+L, D/2] -> [B, T+L, hidden]."""
        mod, _ = self.modulation(vec)
        qkv, mlp = self.linear1(mod.modulate(self.pre_norm(x))).split(
            (3 * self.hidden_size, self.mlp_hidden_dim), dim=-1
        )
        q, k, v = split_heads(qkv, self.num_heads, self.norm)
        attn = attention(q, k, v, pe, mask)
        return torch.addcmul(x, mod.gate, self.linear2(torch.cat((attn, self.mlp_act(mlp)), dim=2)))


class LastLayer(nn.Module):
    """adaLN (shift, scale) + Linear(hidden -> out_channels)."""

    def __init__(self, hidden_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        """x [B, L, hidden], vec [B, hidden] -> [B, L, out_channels]."""
        shift, scale = self.adaLN_modulation(vec).unsqueeze(1).chunk(2, dim=-1)
        return self.linear(torch.addcmul(shift, self.norm_final(x), 1 + scale))
