"""Pure-Python reading of safetensors headers, and the content digest that names an expert.

The registry validates files without importing torch: the header is checked for a sane length, valid JSON,
known dtypes, and data offsets that exactly cover the file, so truncated or padded files are caught before
they are stored. The *content digest* hashes tensor names, dtypes, shapes and raw bytes (never the header's
metadata, which itself holds the expert id), so it can be computed from tensors in memory before writing
and recomputed from the files when verifying.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import CorruptExpertError

# Bytes per element of each safetensors dtype.
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a safetensors file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute file offsets
    end: int


@dataclass(frozen=True)
class Header:
    """A parsed and validated safetensors header."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    size: int


def read_header(path: str | Path, data: bytes | None = None) -> Header:
    """Parse and validate the header of a safetensors file (or of its bytes); raise CorruptExpertError."""
    path = Path(path)
    name = path.name
    if data is None:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CorruptExpertError(f"{name}: not a safetensors file (truncated header)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER:
                raise CorruptExpertError(f"{name}: not a safetensors file (header length {n})")
            raw = f.read(n)
            f.seek(0, 2)
            size = f.tell()
    else:
        if len(data) < 8:
            raise CorruptExpertError(f"{name}: not a safetensors file (truncated header)")
        (n,) = struct.unpack("<Q", data[:8])
        raw, size = bytes(data[8:8 + n]), len(data)
    if len(raw) < n or n > _MAX_HEADER:
        raise CorruptExpertError(f"{name}: truncated safetensors header")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CorruptExpertError(f"{name}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise CorruptExpertError(f"{name}: safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CorruptExpertError(f"{name}: safetensors __metadata__ must map strings to strings")
    start = 8 + n
    tensors: dict[str, TensorInfo] = {}
    for key, info in header.items():
        entry = _entry(info)
        if entry is None or not key:
            raise CorruptExpertError(f"{name}: bad entry for tensor {key!r} in safetensors header")
        dtype, shape, b, e = entry
        tensors[key] = TensorInfo(key, dtype, shape, start + b, start + e)
    # The data must be covered exactly, in order, without gaps or overlaps (what safetensors itself demands).
    end = 0
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if info.begin - start != end:
            raise CorruptExpertError(f"{name}: tensor {info.name!r} does not start where the previous one ends "
                                     f"(overlapping or gapped data offsets)")
        end = info.end - start
    if start + end != size:
        what = "truncated" if start + end > size else "has trailing bytes"
        raise CorruptExpertError(f"{name}: safetensors file {what} ({size} bytes, header describes {start + end})")
    if data is None:
        _library_check(path)
    return Header(tensors, metadata, size)


def _entry(info: Any) -> tuple[str, tuple[int, ...], int, int] | None:
    """(dtype, shape, begin, end) of one header entry, or None when any part is malformed: dims and offsets
    must be non-negative integers (never bools, floats or strings) and the byte range must fit the shape."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        return None
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    ints = lambda xs: isinstance(xs, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0  # noqa: E731
                                                   for x in xs)
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES or not ints(shape) or not ints(offsets) or len(offsets) != 2:
        return None
    count = 1
    for d in shape:
        count *= d
    b, e = offsets
    if b > e or e - b != count * DTYPE_SIZES[dtype]:
        return None
    return dtype, tuple(shape), b, e


def _library_check(path: Path) -> None:
    """Open the file with the safetensors library's own parser too: whatever it refuses, zoo refuses."""
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - safetensors is a dependency
        return
    try:
        with safe_open(str(path), framework="numpy") as f:
            f.metadata()
    except Exception as e:  # SafetensorError and friends; the message names what is wrong
        raise CorruptExpertError(f"{path.name}: the safetensors library refuses this file ({e})") from None


class ContentDigest:
    """Incremental sha256 over an expert's identity fields and tensors (see module docstring)."""

    def __init__(self, identity: dict[str, Any]):
        self._h = hashlib.sha256(b"zoo-expert-content-v1\0")
        self._h.update(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode())

    def add_tensor(self, group: str, name: str, dtype: str, shape: Iterable[int], raw: Any) -> None:
        """Add one tensor (``raw``: its little-endian bytes, any buffer). Call in sorted name order per group."""
        self._h.update(json.dumps([group, name, dtype, list(shape)]).encode() + b"\0")
        self._h.update(raw)

    def hexdigest(self) -> str:
        """The 64-hex digest; an expert's id is its first 16 characters."""
        return self._h.hexdigest()


def file_tensors(paths: Iterable[Path]) -> Iterator[tuple[str, str, tuple[int, ...], bytes]]:
    """Yield (name, dtype, shape, raw bytes) of every tensor of the given files, sorted by name overall."""
    where: list[tuple[str, Path, TensorInfo]] = []
    for p in paths:
        for info in read_header(p).tensors.values():
            where.append((info.name, p, info))
    where.sort(key=lambda w: w[0])
    handles: dict[Path, Any] = {}
    try:
        for name, p, info in where:
            f = handles.get(p) or handles.setdefault(p, open(p, "rb"))
            f.seek(info.begin)
            yield name, info.dtype, info.shape, f.read(info.end - info.begin)
    finally:
        for f in handles.values():
            f.close()


# torch dtypes of the safetensors dtypes (looked up when torch is first needed: this module stays torch-free)
_TORCH_DTYPES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn",
                 "I16": "int16", "U16": "uint16", "F16": "float16", "BF16": "bfloat16", "I32": "int32",
                 "U32": "uint32", "F32": "float32", "I64": "int64", "U64": "uint64", "F64": "float64"}


def tensors_from_buffer(buf: Any, header: Header, name: str = "") -> dict[str, Any]:
    """The tensors of a whole safetensors file held in ``buf`` (already verified: a uint8 tensor, or any
    bytes-like object), as views of it without copying (the tensors keep it alive). A tensor whose offset is
    not a multiple of its element size is copied out instead, so every tensor is aligned."""
    import sys

    import torch

    raw = buf if isinstance(buf, torch.Tensor) else torch.frombuffer(buf, dtype=torch.uint8)
    if sys.byteorder != "little":  # safetensors is little-endian; views would read it wrongly
        from safetensors.torch import load

        return load(raw.numpy().tobytes())
    out: dict[str, Any] = {}
    for key, info in header.tensors.items():
        dtype = getattr(torch, _TORCH_DTYPES[info.dtype], None)
        if dtype is None:
            raise CorruptExpertError(f"{name}: tensor {key!r} has dtype {info.dtype}, which this torch lacks")
        if info.end == info.begin:
            out[key] = torch.empty(info.shape, dtype=dtype)
            continue
        piece = raw[info.begin:info.end]
        if info.begin % DTYPE_SIZES[info.dtype]:
            piece = piece.clone()  # a misaligned start: copy it out to an aligned buffer
        out[key] = piece.view(dtype).reshape(info.shape)
    return out
