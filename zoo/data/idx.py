"""A reader for the IDX format of MNIST and Fashion-MNIST (raw or gzipped).

Layout: two zero bytes, a type code, the number of dimensions n, then n big-endian uint32 sizes, then the
values in big-endian C order. Parsed with ``numpy.frombuffer``; nothing is executed from the file.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

# IDX type code -> big-endian numpy dtype.
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx_bytes(path: str | Path) -> bytes:
    """The IDX bytes of ``path``, gunzipped when the name ends in ``.gz``; DataError if unreadable."""
    path = Path(path)
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.suffix == ".gz" else data
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from None


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes into a native-endian numpy array; DataError naming ``name`` if the header lies.

    The header's sizes must account for exactly the bytes present, so truncated or padded files are caught.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise DataError(f"{name}: not an IDX file (unknown type code 0x{code:02x})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{name}: IDX header announces shape {shape} ({expected} bytes) but the file has "
                        f"{len(data)} bytes")
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a numpy array; DataError naming the file on any defect."""
    return parse_idx(read_idx_bytes(path), str(path))
