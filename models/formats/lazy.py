"""Build a module on the meta device and assign its weights from safetensors, one copy in memory.

Two read paths, chosen per load:
- as stored (no conversion, no dtype change): tensors come from safetensors' copy-on-write mmap,
  so the model's weights *are* the file's pages: nothing is read until used, and the resident
  size never exceeds the file size;
- converted or cast: each tensor is read with `pread` into its own buffer, converted/cast and
  the source dropped, so at most one group of source tensors (one transformer block when a layout
  converter needs q/k/v together) exists beside the result.
Either way `load_state_dict(..., assign=True)` adopts the tensors without copying them again.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch
from safetensors import safe_open
from torch import nn

from .errors import CheckpointFormatError
from .fp8 import adopt_cast_linears, is_fp8, keep_in_compute_dtype_keys, linear_weight_keys
from .header import WeightsInfo

log = logging.getLogger(__name__)

M = TypeVar("M", bound=nn.Module)
Converter = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
SCALE_SUFFIXES = (".scale_weight", ".scale_input")
SCALED_FP8_MARKER = "scaled_fp8"


def _supports_pread() -> bool:
    try:
        return "backend" in inspect.signature(safe_open).parameters
    except (TypeError, ValueError):  # builtins without a signature: try it
        return True


class TensorReader:
    """Reads tensors of a (possibly sharded) checkpoint on demand; `copy` selects pread over mmap."""

    def __init__(self, info: WeightsInfo, *, copy: bool) -> None:
        self.info = info
        self.copy = copy
        self._stack = contextlib.ExitStack()
        self._handles: dict[int, object] = {}

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _handle(self, index: int):
        if index not in self._handles:
            path = str(self.info.files[index].path)
            try:
                handle = safe_open(path, "pt", backend="pread") if self.copy else safe_open(path, "pt")
            except TypeError:  # safetensors without the pread backend
                handle = safe_open(path, "pt")
            except Exception as exc:  # safetensors raises its own SafetensorError
                raise CheckpointFormatError(path, f"cannot open: {exc}") from None
            self._handles[index] = self._stack.enter_context(handle)
        return self._handles[index]

    def get(self, key: str) -> torch.Tensor:
        index = self.info.owner[key]
        try:
            return self._handle(index).get_tensor(key)  # type: ignore[attr-defined]
        except Exception as exc:
            raise CheckpointFormatError(
                self.info.files[index].path, f"cannot read tensor {key!r}: {exc}"
            ) from None


@dataclass(frozen=True)
class DtypePolicy:
    """Which dtype each tensor is stored in after loading.

    Linear weights: `linear_dtype` when given (the UNETLoader fp8 choices), else as stored when the
    file holds them in fp8, else `compute`. Everything else that is floating point: `compute`
    (fp8 norms/biases/embeddings are upcast). Integer tensors are never cast.
    """

    compute: torch.dtype
    linear_dtype: torch.dtype | None = None
    linear_keys: frozenset[str] = frozenset()
    keep_wide: frozenset[str] = frozenset()

    def target(self, key: str, dtype: torch.dtype) -> torch.dtype:
        if not dtype.is_floating_point:
            return dtype
        if key in self.linear_keys and key not in self.keep_wide:
            if self.linear_dtype is not None:
                return self.linear_dtype
            if is_fp8(dtype):
                return dtype
        return self.compute


def infer_compute_dtype(info: WeightsInfo, keys: Iterable[str]) -> torch.dtype:
    """The dtype most of the non-fp8 floating bytes are stored in; bfloat16 when everything is fp8."""
    totals: dict[torch.dtype, int] = {}
    for key in keys:
        t = info.tensor(key)
        dtype = t.torch_dtype
        if dtype.is_floating_point and not is_fp8(dtype):
            totals[dtype] = totals.get(dtype, 0) + t.nbytes
    return max(totals, key=lambda d: totals[d]) if totals else torch.bfloat16


@dataclass(frozen=True)
class Source:
    """Which tensors of a checkpoint make one module: a key prefix and an optional layout converter."""

    info: WeightsInfo
    prefix: str = ""
    convert: Converter | None = None
    group_of: Callable[[str], str] | None = None  # keys a converter must see together share a group
    ignore: Callable[[str], bool] | None = None  # source keys (prefix stripped) the module does not use

    def keys(self) -> list[str]:
        """Full keys of the source tensors, markers and scales excluded."""
        out = []
        for key in self.info:
            if not key.startswith(self.prefix):
                continue
            local = key[len(self.prefix) :]
            if local == SCALED_FP8_MARKER or local.endswith(SCALE_SUFFIXES):
                continue
            if self.ignore is not None and self.ignore(local):
                continue
            out.append(key)
        return out


def load_module(
    build: Callable[[], M],
    source: Source,
    *,
    compute_dtype: torch.dtype | None = None,
    linear_dtype: torch.dtype | None = None,
    materialize: Callable[[nn.Module], None] | None = None,
) -> M:
    """Build `build()` on the meta device and assign its weights from `source` (see module doc).

    fp8 Linear weights stay fp8 and compute through `CastLinear`. `materialize` fills buffers the
    checkpoint does not hold (e.g. non-persistent position ids) after assignment.
    Raises CheckpointFormatError naming the file for missing, unexpected or mis-shaped tensors.
    """
    path = source.info.path
    with torch.device("meta"):
        module = build()
    keys = source.keys()
    compute = compute_dtype or infer_compute_dtype(source.info, keys)
    policy = DtypePolicy(
        compute, linear_dtype, linear_weight_keys(module), keep_in_compute_dtype_keys(module)
    )
    scales = _scales(source)
    identity = source.convert is None and all(
        policy.target(k[len(source.prefix) :], source.info.tensor(k).torch_dtype)
        == source.info.tensor(k).torch_dtype
        for k in keys
    )
    state: dict[str, torch.Tensor] = {}
    with TensorReader(source.info, copy=not identity) as reader:
        for group in _groups(keys, source):
            tensors = {k[len(source.prefix) :]: reader.get(k) for k in group}
            if source.convert is not None:
                try:
                    tensors = source.convert(tensors)
                except (KeyError, ValueError, RuntimeError) as exc:
                    raise CheckpointFormatError(
                        path, f"layout conversion failed on {sorted(tensors)[:3]}: {exc}"
                    ) from None
            for key, tensor in tensors.items():
                state[key] = tensor.to(policy.target(key, tensor.dtype))
            del tensors
    _check_shapes(module, state, path)
    try:
        result = module.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:
        raise CheckpointFormatError(path, f"weights do not fit the model: {exc}") from None
    del state
    if result.unexpected_keys:
        raise CheckpointFormatError(
            path,
            f"{len(result.unexpected_keys)} tensors the model does not have, e.g. "
            f"{sorted(result.unexpected_keys)[:5]}",
        )
    if materialize is not None:
        materialize(module)
    missing = [n for n, t in _named_tensors(module) if t.is_meta]
    if missing:
        raise CheckpointFormatError(
            path,
            f"{len(missing)} tensors missing from the checkpoint"
            f"{' under ' + repr(source.prefix) if source.prefix else ''}, "
            f"e.g. {missing[:5]}",
        )
    swapped = adopt_cast_linears(module, compute, scales)
    if swapped:
        log.debug("%s: %d Linear layers compute in %s from narrower storage", path, swapped, compute)
    module.eval().requires_grad_(False)
    return module


def _groups(keys: list[str], source: Source) -> Iterator[list[str]]:
    if source.convert is None:
        for key in keys:
            yield [key]
        return
    groups: dict[str, list[str]] = {}
    for key in keys:
        local = key[len(source.prefix) :]
        groups.setdefault(source.group_of(local) if source.group_of else "", []).append(key)
    yield from groups.values()


def _scales(source: Source) -> dict[str, torch.Tensor]:
    """ComfyUI scaled-fp8 `<layer>.scale_weight` scalars, by module name (converted layouts excluded)."""
    names = [k for k in source.info if k.startswith(source.prefix) and k.endswith(".scale_weight")]
    if not names:
        return {}
    if source.convert is not None:
        raise CheckpointFormatError(
            source.info.path, "scaled-fp8 weights are only supported in the BFL layout"
        )
    with TensorReader(source.info, copy=True) as reader:
        return {
            k[len(source.prefix) : -len(".scale_weight")]: reader.get(k).float().reshape(()) for k in names
        }


def _named_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from module.named_parameters(remove_duplicate=True)
    yield from module.named_buffers(remove_duplicate=True)


def _check_shapes(module: nn.Module, state: Mapping[str, torch.Tensor], path) -> None:
    expected = {k: tuple(t.shape) for k, t in module.state_dict(keep_vars=True).items()}
    wrong = [
        f"{k}: file {tuple(t.shape)} vs model {expected[k]}"
        for k, t in state.items()
        if k in expected and tuple(t.shape) != expected[k]
    ]
    if wrong:
        raise CheckpointFormatError(path, f"{len(wrong)} tensors have the wrong shape, e.g. {wrong[:3]}")
