"""Trainable LoRA / LoHa / LoKr / OFT adapters attached to a frozen base model by forward hooks.

`attach(model, ...)` creates one adapter per targeted `nn.Linear` and registers a forward hook
that adds the adapter's output to the layer's output: y = W x + b + scale * delta(x) (OFT, in
`oft.py`, rotates W x instead). Nothing of the base module changes (no parameter is replaced, no
weight is modified); `AdapterSet.detach()` removes the hooks and leaves the module exactly as it
was. The same adapters can be hooked into a second model with the same layout (a separate
inference base, Dev2Pro-style).

Parameter names equal the file suffixes ComfyUI reads (`lora_up.weight`, `hada_w1_a`, `lokr_w1`,
`oft_blocks`, ...), so saving is a rename of the module path (see `lora_state_dict`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

_DOUBLE_LINEARS = (
    "img_mod.lin", "img_attn.qkv", "img_attn.proj", "img_mlp.0", "img_mlp.2",
    "txt_mod.lin", "txt_attn.qkv", "txt_attn.proj", "txt_mlp.0", "txt_mlp.2",
)  # fmt: skip
_SINGLE_LINEARS = ("linear1", "linear2", "modulation.lin")
_EMBEDDERS = (
    "img_in", "txt_in", "time_in.in_layer", "time_in.out_layer", "vector_in.in_layer",
    "vector_in.out_layer", "guidance_in.in_layer", "guidance_in.out_layer", "final_layer.linear",
    "final_layer.adaLN_modulation.1",
)  # fmt: skip


def target_modules(model: nn.Module, preset: str) -> list[str]:
    """Names of the Linear layers a preset trains (BFL module paths, in model order).

    all_linear: every Linear of the double and single blocks (kohya's default set);
    attention: qkv/proj of both streams and the single blocks' linear1/linear2;
    no_modulation: all_linear without the modulation Linears;
    all_with_embedders: all_linear plus the input embedders and the final layer.
    """
    if preset == "attention":
        double: tuple[str, ...] = ("img_attn.qkv", "img_attn.proj", "txt_attn.qkv", "txt_attn.proj")
        single: tuple[str, ...] = ("linear1", "linear2")
    elif preset == "no_modulation":
        double = tuple(n for n in _DOUBLE_LINEARS if "mod" not in n)
        single = ("linear1", "linear2")
    elif preset in ("all_linear", "all_with_embedders"):
        double, single = _DOUBLE_LINEARS, _SINGLE_LINEARS
    else:
        raise ValueError(f"unknown target preset {preset!r}")
    wanted = re.compile(
        r"^(double_blocks\.\d+\.(" + "|".join(map(re.escape, double)) + r")"
        r"|single_blocks\.\d+\.("
        + "|".join(map(re.escape, single))
        + r")"
        + (r"|" + "|".join(map(re.escape, _EMBEDDERS)) if preset == "all_with_embedders" else "")
        + r")$"
    )
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and wanted.match(n)]


def factorize(dim: int, factor: int = -1) -> tuple[int, int]:
    """(m, n) with m * n = dim and m <= n: m = factor if it divides dim, else the divisor nearest sqrt."""
    if factor > 0 and dim % factor == 0:
        return (factor, dim // factor) if factor <= dim // factor else (dim // factor, factor)
    m = int(math.isqrt(dim))
    while dim % m:
        m -= 1
    return m, dim // m


class Adapter(nn.Module):
    """Base: `delta(x)` is what the hook adds to the layer's output (before `scale`)."""

    rank: int
    alpha: float

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta_weight(self) -> Tensor:
        raise NotImplementedError

    def delta(self, x: Tensor) -> Tensor:
        return F.linear(x, self.delta_weight())

    def adapt_output(self, x: Tensor, output: Tensor, bias: Tensor | None, strength: float) -> Tensor:
        """The layer's output with this adapter at `strength` (additive: + strength * scale * delta(x))."""
        param = next(self.parameters())
        d = self.delta(x.to(param.dtype))
        return output + (d * (self.scale * strength)).to(output.dtype)


class LoRA(Adapter):
    """delta(x) = up(down(x)); down [r, in] Kaiming-uniform, up [out, r] zero (zero delta at start)."""

    def __init__(
        self, in_features: int, out_features: int, rank: int, alpha: float, gen: torch.Generator
    ) -> None:
        super().__init__()
        self.rank, self.alpha = rank, alpha
        self.lora_down = nn.Linear(in_features, rank, bias=False)
        self.lora_up = nn.Linear(rank, out_features, bias=False)
        bound = 1.0 / math.sqrt(in_features)
        with torch.no_grad():
            self.lora_down.weight.copy_(torch.rand(rank, in_features, generator=gen) * 2 * bound - bound)
            self.lora_up.weight.zero_()

    def delta(self, x: Tensor) -> Tensor:
        return self.lora_up(self.lora_down(x))

    def delta_weight(self) -> Tensor:
        return self.lora_up.weight @ self.lora_down.weight


class LoHa(Adapter):
    """Hadamard product of two low-rank products: dW = (w1_a @ w1_b) * (w2_a @ w2_b)."""

    def __init__(
        self, in_features: int, out_features: int, rank: int, alpha: float, gen: torch.Generator
    ) -> None:
        super().__init__()
        self.rank, self.alpha = rank, alpha
        self.hada_w1_a = nn.Parameter(torch.randn(out_features, rank, generator=gen) * 0.1)
        self.hada_w1_b = nn.Parameter(torch.randn(rank, in_features, generator=gen))
        self.hada_w2_a = nn.Parameter(torch.zeros(out_features, rank))
        self.hada_w2_b = nn.Parameter(torch.randn(rank, in_features, generator=gen))

    def delta_weight(self) -> Tensor:
        return (self.hada_w1_a @ self.hada_w1_b) * (self.hada_w2_a @ self.hada_w2_b)


class LoKr(Adapter):
    """Kronecker product: dW = kron(w1 [a, c], w2_a @ w2_b [b, d]) with out = a*b, in = c*d."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        alpha: float,
        gen: torch.Generator,
        factor: int = -1,
    ) -> None:
        super().__init__()
        a, b = factorize(out_features, factor)
        c, d = factorize(in_features, factor)
        self.rank, self.alpha = min(rank, b, d), alpha
        bound = 1.0 / math.sqrt(c)
        self.lokr_w1 = nn.Parameter(torch.rand(a, c, generator=gen) * 2 * bound - bound)
        self.lokr_w2_a = nn.Parameter(torch.randn(b, self.rank, generator=gen) / math.sqrt(self.rank))
        self.lokr_w2_b = nn.Parameter(torch.zeros(self.rank, d))

    def delta_weight(self) -> Tensor:
        return torch.kron(self.lokr_w1, self.lokr_w2_a @ self.lokr_w2_b)


ADAPTER_TYPES: Mapping[str, type[Adapter]] = {"LoRA": LoRA, "LoHa": LoHa, "LoKr": LoKr}


def make_adapter(
    algorithm: str, layer: nn.Linear, rank: int, alpha: float, gen: torch.Generator, *, lokr_factor: int = -1
) -> Adapter:
    if algorithm == "LoKr":
        return LoKr(layer.in_features, layer.out_features, rank, alpha, gen, lokr_factor)
    if algorithm == "OFT":  # built on Adapter (this module), so imported here
        from .oft import OFT

        return OFT(layer.out_features, rank, alpha)
    if algorithm not in ADAPTER_TYPES:
        choices = sorted([*ADAPTER_TYPES, "OFT"])
        raise ValueError(f"unknown adapter algorithm {algorithm!r}; one of {choices}")
    return ADAPTER_TYPES[algorithm](layer.in_features, layer.out_features, rank, alpha, gen)


def _hook(adapter: Adapter, strength: float):  # type: ignore[no-untyped-def]
    def adapt(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
        return adapter.adapt_output(args[0], output, getattr(module, "bias", None), strength)

    return adapt


@dataclass(eq=False)
class AdapterSet:
    """The trainable adapters (an nn.ModuleDict keyed by module path with "." -> "|") and their hooks."""

    modules: nn.ModuleDict
    names: tuple[str, ...]
    algorithm: str
    _handles: list[tuple[int, RemovableHandle]] = field(default_factory=list)

    def adapter(self, name: str) -> Adapter:
        module = self.modules[name.replace(".", "|")]
        assert isinstance(module, Adapter)
        return module

    def items(self) -> Iterator[tuple[str, Adapter]]:
        for name in self.names:
            yield name, self.adapter(name)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.modules.parameters())

    def hook_into(self, model: nn.Module, strength: float = 1.0) -> None:
        """Register the hooks on `model` (which must have every target layer); undone by `detach`."""
        layers = dict(model.named_modules())
        missing = [n for n in self.names if not isinstance(layers.get(n), nn.Linear)]
        if missing:
            raise ValueError(f"the model has no Linear layers named {missing[:5]}")
        for name, adapter in self.items():
            self._handles.append((id(model), layers[name].register_forward_hook(_hook(adapter, strength))))

    def detach(self) -> None:
        """Remove every hook this set registered (on every model it was hooked into)."""
        while self._handles:
            self._handles.pop()[1].remove()

    def detach_from(self, model: nn.Module) -> None:
        """Remove the hooks registered on `model` only."""
        keep = []
        for owner, handle in self._handles:
            if owner == id(model):
                handle.remove()
            else:
                keep.append((owner, handle))
        self._handles = keep

    @property
    def attached(self) -> bool:
        return bool(self._handles)


def create(
    model: nn.Module,
    *,
    algorithm: str = "LoRA",
    rank: int = 8,
    alpha: float = 1.0,
    targets: str = "all_linear",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    lokr_factor: int = -1,
) -> AdapterSet:
    """Fresh adapters for `model`'s target layers, initialised from `seed` (not hooked yet)."""
    gen = torch.Generator().manual_seed(seed)
    layers = dict(model.named_modules())
    names = tuple(target_modules(model, targets))
    if not names:
        raise ValueError(f"target preset {targets!r} matches no Linear layer of this model")
    modules = nn.ModuleDict()
    for name in names:
        layer = layers[name]
        assert isinstance(layer, nn.Linear)
        modules[name.replace(".", "|")] = make_adapter(
            algorithm, layer, rank, alpha, gen, lokr_factor=lokr_factor
        )
    dev = device if device is not None else next(model.parameters()).device
    modules.to(device=dev, dtype=dtype)
    return AdapterSet(modules, names, algorithm)


def attach(model: nn.Module, **kwargs: object) -> AdapterSet:
    """`create(model, **kwargs)` hooked into `model`."""
    adapters = create(model, **kwargs)  # type: ignore[arg-type]
    adapters.hook_into(model)
    return adapters


# --- file keys ---------------------------------------------------------------------------------


def file_prefix(module_name: str, key_style: str = "comfyui") -> str:
    """`diffusion_model.<path>` (ComfyUI generic) or `lora_unet_<path with _>` (kohya)."""
    if key_style == "kohya":
        return "lora_unet_" + module_name.replace(".", "_")
    return "diffusion_model." + module_name


def lora_state_dict(
    adapters: AdapterSet, *, key_style: str = "comfyui", dtype: torch.dtype | None = None
) -> dict[str, Tensor]:
    """The adapters as a LoRA file's tensors: `<prefix>.<param>` plus a 0-d `<prefix>.alpha`."""
    out: dict[str, Tensor] = {}
    for name, adapter in adapters.items():
        prefix = file_prefix(name, key_style)
        for pname, p in adapter.named_parameters():
            t = p.detach().to("cpu")
            out[f"{prefix}.{pname}"] = (t.to(dtype) if dtype is not None else t).contiguous()
        out[f"{prefix}.alpha"] = torch.tensor(float(adapter.alpha))
    return out


def load_adapter_weights(
    adapters: AdapterSet, tensors: Mapping[str, Tensor], *, key_style: str = "comfyui"
) -> None:
    """Copy matching file tensors (as written by `lora_state_dict`) into the adapters."""
    with torch.no_grad():
        for name, adapter in adapters.items():
            prefix = file_prefix(name, key_style)
            for pname, p in adapter.named_parameters():
                key = f"{prefix}.{pname}"
                if key not in tensors:
                    raise KeyError(f"LoRA file lacks {key}")
                if tuple(tensors[key].shape) != tuple(p.shape):
                    raise ValueError(f"{key}: shape {tuple(tensors[key].shape)} != {tuple(p.shape)}")
                p.copy_(tensors[key].to(p.dtype))
            if f"{prefix}.alpha" in tensors:
                adapter.alpha = float(tensors[f"{prefix}.alpha"])
