"""FLUX.1 transformer hyper-parameters, presets, and detection from state-dict shapes (BFL layout)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PREFIXES = ("model.diffusion_model.", "diffusion_model.")
FLUX2_MARKER = "double_stream_modulation_img.lin.weight"


class FluxParamsError(ValueError):
    """A state dict that is not a FLUX.1 transformer in the BFL layout (names the missing/odd key)."""


@dataclass(frozen=True)
class FluxParams:
    """Hyper-parameters of a FLUX.1 transformer; channel counts are packed (2x2 patch) features."""

    in_channels: int = 64
    out_channels: int = 64
    vec_in_dim: int = 768
    context_in_dim: int = 4096
    hidden_size: int = 3072
    mlp_ratio: float = 4.0
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    axes_dim: tuple[int, ...] = (16, 56, 56)
    theta: int = 10_000
    qkv_bias: bool = True
    guidance_embed: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "axes_dim", tuple(int(a) for a in self.axes_dim))
        for name in (
            "in_channels",
            "out_channels",
            "vec_in_dim",
            "context_in_dim",
            "hidden_size",
            "num_heads",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"FluxParams.{name} must be >= 1, got {getattr(self, name)}")
        if self.depth < 0 or self.depth_single_blocks < 0:
            raise ValueError(
                f"block counts must be >= 0, got depth {self.depth}, "
                f"depth_single_blocks {self.depth_single_blocks}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if sum(self.axes_dim) != self.head_dim:
            raise ValueError(
                f"sum(axes_dim) = sum({self.axes_dim}) = {sum(self.axes_dim)} must equal the head "
                f"dim {self.hidden_size} / {self.num_heads} = {self.head_dim}"
            )
        if any(a <= 0 or a % 2 for a in self.axes_dim):
            raise ValueError(f"every axes_dim entry must be even and positive, got {self.axes_dim}")
        if self.mlp_ratio <= 0 or (self.hidden_size * self.mlp_ratio) % 1:
            raise ValueError(
                f"hidden_size {self.hidden_size} * mlp_ratio {self.mlp_ratio} must be a positive integer"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)


FLUX_DEV = FluxParams()
FLUX_SCHNELL = FluxParams(guidance_embed=False)
FLUX_FILL = FluxParams(in_channels=384)
FLUX_CANNY_DEPTH = FluxParams(in_channels=128)

PRESETS: Mapping[str, FluxParams] = {
    "dev": FLUX_DEV,
    "schnell": FLUX_SCHNELL,
    "fill": FLUX_FILL,
    "canny/depth": FLUX_CANNY_DEPTH,
}


def flux_variant_name(params: FluxParams) -> str:
    """ "dev", "schnell", "fill" or "canny/depth" from the input width and guidance embedding.

    Dev, Krea, Kontext and Dev2Pro share one layout and all read as "dev"; which of them a file
    holds is the user's (or the file name's) call, not a detection result.
    """
    if params.in_channels == 6 * params.out_channels:
        return "fill"
    if params.in_channels == 2 * params.out_channels:
        return "canny/depth"
    return "dev" if params.guidance_embed else "schnell"


def default_axes_dim(head_dim: int) -> tuple[int, ...]:
    """RoPE split for a head dim: (16, 56, 56) for 128; for other (tiny) sizes ~1/8 on axis 0, rest evenly.

    Shapes never record axes_dim; real FLUX.1 files always have head dim 128.
    """
    if head_dim < 6 or head_dim % 2:
        raise ValueError(f"head dim {head_dim} cannot be split into three even RoPE axes")
    side = 2 * ((head_dim - 2 * max(1, round(head_dim / 16))) // 4)
    return (head_dim - 2 * side, side, side)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in (value.shape if hasattr(value, "shape") else value))


def find_prefix(keys: Iterable[str]) -> str:
    """The key prefix in front of the BFL names ("model.diffusion_model.", "diffusion_model." or "")."""
    keys = list(keys)
    for prefix in PREFIXES:
        if sum(1 for k in keys if k.startswith(prefix)) > 5:
            return prefix
    return ""


def _block_count(keys: Iterable[str], name: str) -> int:
    pattern = re.compile(rf"{name}\.(\d+)\.")
    indices = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    if indices and indices != set(range(len(indices))):
        raise FluxParamsError(f"{name} indices are not contiguous from 0: {sorted(indices)}")
    return len(indices)


def detect_flux_params(
    shapes: Mapping[str, Any], prefix: str | None = None, *, axes_dim: tuple[int, ...] | None = None
) -> FluxParams:
    """FluxParams of a BFL-layout FLUX.1 state dict from `key -> shape` (tensors, meta tensors or tuples).

    `prefix` None finds it ("model.diffusion_model.", "diffusion_model." or none). Heads come from the
    QK-norm width (the head dim); `axes_dim` defaults to `default_axes_dim(head_dim)`.
    Raises FluxParamsError naming the missing key, or for FLUX.2 files.
    """
    if prefix is None:
        prefix = find_prefix(shapes)
    local = {k[len(prefix) :]: v for k, v in shapes.items() if k.startswith(prefix)}
    if FLUX2_MARKER in local:
        raise FluxParamsError(f"{prefix}{FLUX2_MARKER} is present: this is a FLUX.2 transformer, not FLUX.1")

    def shape(key: str) -> tuple[int, ...]:
        if key not in local:
            raise FluxParamsError(
                f"not a FLUX.1 transformer in the BFL layout: {prefix}{key} is missing "
                f"({len(local)} keys under prefix {prefix!r})"
            )
        return _shape(local[key])

    hidden, in_channels = shape("img_in.weight")
    out_channels = shape("final_layer.linear.weight")[0]
    depth = _block_count(local, "double_blocks")
    single = _block_count(local, "single_blocks")
    if depth:
        head_dim = shape("double_blocks.0.img_attn.norm.query_norm.scale")[0]
        mlp_hidden = shape("double_blocks.0.img_mlp.0.weight")[0]
        qkv_bias = "double_blocks.0.img_attn.qkv.bias" in local
    elif single:
        head_dim = shape("single_blocks.0.norm.query_norm.scale")[0]
        mlp_hidden = shape("single_blocks.0.linear1.weight")[0] - 3 * hidden
        qkv_bias = True
    else:
        raise FluxParamsError("no double_blocks.* or single_blocks.* keys: not a FLUX.1 transformer")
    if head_dim < 1 or hidden % head_dim:
        raise FluxParamsError(f"hidden size {hidden} is not a multiple of the QK-norm width {head_dim}")
    try:
        return FluxParams(
            in_channels=in_channels,
            out_channels=out_channels,
            vec_in_dim=shape("vector_in.in_layer.weight")[1],
            context_in_dim=shape("txt_in.weight")[1],
            hidden_size=hidden,
            mlp_ratio=mlp_hidden / hidden,
            num_heads=hidden // head_dim,
            depth=depth,
            depth_single_blocks=single,
            axes_dim=axes_dim if axes_dim is not None else default_axes_dim(head_dim),
            qkv_bias=qkv_bias,
            guidance_embed="guidance_in.in_layer.weight" in local,
        )
    except ValueError as exc:
        raise FluxParamsError(f"inconsistent FLUX.1 shapes: {exc}") from None
