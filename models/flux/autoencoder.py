"""The FLUX.1 autoencoder (ae.safetensors layout: encoder.*, decoder.*), its params and detection."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .ae_blocks import Downsample, MidBlock, ResnetBlock, Upsample, normalize
from .latent_format import FLUX1_LATENT, LatentFormat


class AutoEncoderParamsError(ValueError):
    """A state dict that is not a FLUX.1-style autoencoder (names the missing or odd key)."""


@dataclass(frozen=True)
class AutoEncoderParams:
    """Autoencoder shape + latent normalisation: model latents = scale_factor * (mean - shift_factor)."""

    resolution: int = 256
    in_channels: int = 3
    ch: int = 128
    out_ch: int = 3
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 16
    scale_factor: float = FLUX1_LATENT.scale
    shift_factor: float = FLUX1_LATENT.shift

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        if not self.ch_mult or any(m < 1 for m in self.ch_mult):
            raise ValueError(f"ch_mult must be non-empty positive multipliers, got {self.ch_mult}")
        widths = [self.ch * m for m in self.ch_mult]
        if any(w % 32 for w in (self.ch, *widths)):
            raise ValueError(f"block widths {[self.ch, *widths]} must be multiples of 32 (GroupNorm groups)")
        for name in ("in_channels", "out_ch", "num_res_blocks", "z_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"AutoEncoderParams.{name} must be >= 1, got {getattr(self, name)}")
        if self.scale_factor == 0:
            raise ValueError("scale_factor must be non-zero")

    @property
    def latent_format(self) -> LatentFormat:
        """How this VAE's latents map to model space."""
        return LatentFormat(scale=self.scale_factor, shift=self.shift_factor, channels=self.z_channels)

    @property
    def downscale(self) -> int:
        """Pixels per latent pixel along each side (8 for FLUX)."""
        return 2 ** (len(self.ch_mult) - 1)


FLUX_AE = AutoEncoderParams()


class _Level(nn.Module):
    """One resolution level: `block` resnets, then an optional `downsample` / `upsample`."""

    def __init__(self, blocks: list[ResnetBlock], resample: nn.Module | None, name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.resample_name = name if resample is not None else None
        if resample is not None:
            self.add_module(name, resample)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block:
            x = block(x)
        if self.resample_name is not None:
            x = getattr(self, self.resample_name)(x)
        return x


class Encoder(nn.Module):
    """[B, in_channels, H, W] -> moments [B, 2*z_channels, H/f, W/f] (mean | logvar)."""

    def __init__(self, p: AutoEncoderParams) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(p.in_channels, p.ch, kernel_size=3, stride=1, padding=1)
        levels, block_in = [], p.ch
        for i, mult in enumerate(p.ch_mult):
            block_out = p.ch * mult
            blocks = []
            for _ in range(p.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            last = i == len(p.ch_mult) - 1
            levels.append(_Level(blocks, None if last else Downsample(block_in), "downsample"))
        self.down = nn.ModuleList(levels)
        self.mid = MidBlock(block_in)
        self.norm_out = normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * p.z_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """[B, z_channels, h, w] -> [B, out_ch, h*f, w*f]; `up.{i}` is resolution level i (up.0 runs last)."""

    def __init__(self, p: AutoEncoderParams) -> None:
        super().__init__()
        block_in = p.ch * p.ch_mult[-1]
        self.conv_in = nn.Conv2d(p.z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = MidBlock(block_in)
        levels: list[nn.Module] = [nn.Identity()] * len(p.ch_mult)
        for i in reversed(range(len(p.ch_mult))):
            block_out = p.ch * p.ch_mult[i]
            blocks = []
            for _ in range(p.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            levels[i] = _Level(blocks, Upsample(block_in) if i else None, "upsample")
        self.up = nn.ModuleList(levels)
        self.norm_out = normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, p.out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoEncoder(nn.Module):
    """FLUX VAE: pixels in -1..1 <-> scaled/shifted 16-channel latents at 1/8 resolution."""

    def __init__(self, params: AutoEncoderParams) -> None:
        super().__init__()
        self.params = params
        self.encoder = Encoder(params)
        self.decoder = Decoder(params)
        self.latent_format = params.latent_format

    def encode(self, x: Tensor) -> Tensor:
        """x [B, 3, H, W] in -1..1 (H, W multiples of 8) -> scale * (mean - shift) [B, z, H/8, W/8]."""
        mean = self.encoder(x)[:, : self.params.z_channels]
        return self.latent_format.process_in(mean)

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latents [B, z, h, w] -> pixels [B, 3, 8h, 8w], about -1..1 (not clamped)."""
        return self.decoder(self.latent_format.process_out(z))

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in (value.shape if hasattr(value, "shape") else value))


def detect_autoencoder_params(
    shapes: Mapping[str, Any],
    prefix: str | None = None,
    *,
    scale_factor: float = FLUX1_LATENT.scale,
    shift_factor: float = FLUX1_LATENT.shift,
) -> AutoEncoderParams:
    """AutoEncoderParams of an ae.safetensors-layout state dict from `key -> shape`.

    `prefix` None finds it (e.g. "vae." inside an all-in-one checkpoint). Scale and shift are not
    stored in the file; FLUX's are the defaults.
    """
    if prefix is None:
        found = [k[: -len("encoder.conv_in.weight")] for k in shapes if k.endswith("encoder.conv_in.weight")]
        prefix = min(found, key=len) if found else ""
    local = {k[len(prefix) :]: v for k, v in shapes.items() if k.startswith(prefix)}

    def shape(key: str) -> tuple[int, ...]:
        if key not in local:
            raise AutoEncoderParamsError(
                f"not a FLUX autoencoder in the ae.safetensors layout: {prefix}{key} is missing"
            )
        return _shape(local[key])

    for marker in ("quant_conv.weight", "encoder.quant_conv.weight", "decoder.post_quant_conv.weight"):
        if marker in local:
            raise AutoEncoderParamsError(f"{prefix}{marker} is present: an SD/FLUX.2-style VAE, not FLUX.1's")
    ch, in_channels = shape("encoder.conv_in.weight")[:2]
    levels = sorted({int(m.group(1)) for k in local if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    blocks = {int(m.group(1)) for k in local if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
    if not levels or not blocks:
        raise AutoEncoderParamsError(f"no {prefix}encoder.down.*.block.* keys: not a FLUX autoencoder")
    ch_mult = tuple(shape(f"encoder.down.{i}.block.0.conv1.weight")[0] // ch for i in levels)
    try:
        return AutoEncoderParams(
            in_channels=in_channels,
            ch=ch,
            out_ch=shape("decoder.conv_out.weight")[0],
            ch_mult=ch_mult,
            num_res_blocks=len(blocks),
            z_channels=shape("decoder.conv_in.weight")[1],
            scale_factor=scale_factor,
            shift_factor=shift_factor,
        )
    except ValueError as exc:
        raise AutoEncoderParamsError(f"inconsistent autoencoder shapes: {exc}") from None
