"""Read safetensors headers (JSON only, no tensor bytes): key -> dtype, shape, byte range; metadata.

Layout of a safetensors file: 8-byte little-endian header length N, N bytes of JSON, then the data
block. Every tensor entry is checked against the data block so a truncated download is reported
here, before anything is built. Sharded checkpoints (`*.safetensors.index.json` with a `weight_map`)
merge into one `WeightsInfo`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch

from .errors import CheckpointFormatError, UnsupportedFormatError

# safetensors dtype tag -> (torch dtype, bytes per element)
DTYPES: Mapping[str, tuple[torch.dtype, int]] = MappingProxyType(
    {
        "F64": (torch.float64, 8),
        "F32": (torch.float32, 4),
        "F16": (torch.float16, 2),
        "BF16": (torch.bfloat16, 2),
        "F8_E4M3": (torch.float8_e4m3fn, 1),
        "F8_E5M2": (torch.float8_e5m2, 1),
        "I64": (torch.int64, 8),
        "I32": (torch.int32, 4),
        "I16": (torch.int16, 2),
        "I8": (torch.int8, 1),
        "U8": (torch.uint8, 1),
        "BOOL": (torch.bool, 1),
    }
)
FP8_TAGS = frozenset({"F8_E4M3", "F8_E5M2"})
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit
_PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor entry of a header: dtype tag (e.g. "BF16"), shape, byte range inside the data block."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype][0]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def is_fp8(self) -> bool:
        return self.dtype in FP8_TAGS


@dataclass(frozen=True)
class FileInfo:
    """What a safetensors header says about one file."""

    path: Path
    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str]
    header_bytes: int
    file_bytes: int

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: t.shape for k, t in self.tensors.items()}

    @property
    def data_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


@dataclass(frozen=True)
class WeightsInfo:
    """One checkpoint, possibly sharded: every key with its info and the file that holds it."""

    path: Path  # the file, index json or folder the caller named
    files: tuple[FileInfo, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)
    owner: Mapping[str, int] = field(init=False, repr=False, compare=False)  # key -> index into files

    def __post_init__(self) -> None:
        owner: dict[str, int] = {}
        for i, info in enumerate(self.files):
            for key in info.tensors:
                if key in owner:
                    raise CheckpointFormatError(
                        info.path, f"tensor {key!r} also appears in {self.files[owner[key]].path.name}"
                    )
                owner[key] = i
        object.__setattr__(self, "owner", MappingProxyType(owner))

    def __contains__(self, key: object) -> bool:
        return key in self.owner

    def __iter__(self) -> Iterator[str]:
        return iter(self.owner)

    def __len__(self) -> int:
        return len(self.owner)

    def tensor(self, key: str) -> TensorInfo:
        return self.files[self.owner[key]].tensors[key]

    def file_of(self, key: str) -> FileInfo:
        return self.files[self.owner[key]]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: self.tensor(k).shape for k in self}

    @property
    def dtypes(self) -> dict[str, str]:
        return {k: self.tensor(k).dtype for k in self}

    @property
    def file_bytes(self) -> int:
        return sum(f.file_bytes for f in self.files)


def inspect_file(path: str | Path) -> FileInfo:
    """Parse and check a safetensors header without reading tensor data.

    Raises CheckpointFormatError (naming the file) for a missing, truncated or corrupt file and
    UnsupportedFormatError for pickled checkpoints and GGUF files.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            (n,) = struct.unpack("<Q", head) if len(head) == 8 else (-1,)
            if n < 0 or n > MAX_HEADER_BYTES or n > size - 8:
                _raise_not_safetensors(path, head, size, n)
            raw = f.read(n)
    except FileNotFoundError:
        raise CheckpointFormatError(path, "file not found") from None
    except IsADirectoryError:
        raise CheckpointFormatError(path, "is a folder, expected a .safetensors file") from None
    except OSError as exc:
        raise CheckpointFormatError(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointFormatError(path, f"header is not valid JSON ({exc}); the file is corrupt") from None
    except RecursionError:
        raise CheckpointFormatError(path, "header nests JSON too deeply; the file is corrupt") from None
    except ValueError as exc:  # e.g. an integer longer than the interpreter converts
        raise CheckpointFormatError(path, f"header holds an unreadable value ({str(exc)[:100]})") from None
    if not isinstance(header, dict):
        raise CheckpointFormatError(path, f"header is a JSON {type(header).__name__}, expected an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CheckpointFormatError(path, "__metadata__ is not a JSON object")
    data_size = size - 8 - n
    tensors = {key: _tensor_entry(path, key, entry, data_size) for key, entry in header.items()}
    return FileInfo(
        path,
        MappingProxyType(tensors),
        MappingProxyType({str(k): str(v) for k, v in metadata.items()}),
        n,
        size,
    )


def _raise_not_safetensors(path: Path, head: bytes, size: int, n: int) -> None:
    if head[:4] == b"GGUF":
        raise UnsupportedFormatError(path, "GGUF files are not supported; use a .safetensors checkpoint")
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        raise UnsupportedFormatError(
            path, "pickled (.ckpt/.pt) checkpoints are not loaded for safety; convert it to .safetensors"
        )
    if n < 0:
        raise CheckpointFormatError(
            path, f"file is {size} bytes; a safetensors file starts with an 8-byte header length"
        )
    raise CheckpointFormatError(
        path,
        f"header length {n} does not fit a {size}-byte file (truncated download or not a safetensors file)",
    )


def _tensor_entry(path: Path, key: str, entry: object, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise CheckpointFormatError(path, f"tensor {key!r}: malformed header entry {entry!r}")
    tag, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(tag, str):
        raise CheckpointFormatError(
            path, f"tensor {key[:200]!r}: dtype must be a string, got {repr(tag)[:100]}"
        )
    if tag not in DTYPES:
        raise UnsupportedFormatError(
            path, f"tensor {key[:200]!r} has dtype {tag[:40]}, which is not supported"
        )
    if (
        not isinstance(shape, list)
        or not isinstance(offsets, list)
        or not all(type(d) is int and d >= 0 for d in shape)
        or not all(type(o) is int for o in offsets)
        or len(offsets) != 2
    ):
        raise CheckpointFormatError(
            path, f"tensor {key[:200]!r}: bad shape {repr(shape)[:100]} or offsets {repr(offsets)[:100]}"
        )
    shape_t = tuple(shape)
    start, end = offsets
    info = TensorInfo(tag, shape_t, start, end)
    expected = info.numel * DTYPES[tag][1]
    if start < 0 or end - start != expected:
        raise CheckpointFormatError(
            path,
            f"tensor {key!r}: {tag}{list(shape_t)} needs {expected} bytes, "
            f"header gives range [{start}, {end})",
        )
    if end > data_size:
        raise CheckpointFormatError(
            path,
            f"truncated: tensor {key!r} ends at byte {end} of the data block "
            f"but only {data_size} bytes are present",
        )
    return info


def inspect_weights(path: str | Path) -> WeightsInfo:
    """Inspect a single file, a `*.safetensors.index.json`, or a folder of weight files.

    A folder is read through its index json if it has one, else every `*.safetensors` in it.
    """
    path = Path(path)
    if path.is_dir():
        indexes = sorted(path.glob("*.safetensors.index.json"))
        if indexes:
            return _inspect_index(indexes[0], named=path)
        files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.sft"))
        if not files:
            pickled = [p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES]
            what = f"only pickled weights {pickled}" if pickled else "no .safetensors weights"
            raise CheckpointFormatError(path, f"folder has {what}")
        return WeightsInfo(path, tuple(inspect_file(f) for f in files))
    if path.name.endswith(".index.json"):
        return _inspect_index(path, named=path)
    info = inspect_file(path)
    return WeightsInfo(path, (info,), info.metadata)


def _inspect_index(index: Path, named: Path) -> WeightsInfo:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except FileNotFoundError:
        raise CheckpointFormatError(index, "index file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointFormatError(index, f"not a sharded-checkpoint index ({exc})") from None
    shard_names = sorted(set(weight_map.values()))
    for name in shard_names:
        if Path(name).name != name:
            raise CheckpointFormatError(index, f"shard name {name!r} leaves the folder")
    shards = tuple(inspect_file(index.parent / name) for name in shard_names)
    present = {k for s in shards for k in s.tensors}
    missing = sorted(set(weight_map) - present)
    if missing:
        raise CheckpointFormatError(
            index,
            f"{len(missing)} tensors listed in the index are missing from the shards, e.g. {missing[:3]}",
        )
    return WeightsInfo(named, shards, {})
