"""A restricted unpickler for the CIFAR "python version" batch files.

Why not the stock unpickler: unpickling calls whatever callable the file names, so a tampered ``data_batch_1``
could run ``os.system`` the moment it is opened. The CIFAR batches only ever need dicts, lists, ints, bytes
and numpy arrays, and a numpy array is rebuilt through a handful of numpy globals. ``find_class`` below
returns exactly those (plus ``_codecs.encode`` limited to latin-1, which Python 3 protocol-2 pickles use for
bytes) and refuses every other global before anything is called. Nothing that could run code is reachable.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import DataError


def _numpy_attr(submodule: str, name: str) -> Any:
    """Fetch ``numpy._core.<submodule>.<name>`` (numpy 2) or ``numpy.core.<submodule>.<name>`` (numpy 1).

    Pickles written by either numpy name either module; resolving through the one that exists avoids
    numpy 2's deprecation warning for ``numpy.core``.
    """
    import importlib

    try:
        module = importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:  # numpy < 2
        module = importlib.import_module(f"numpy.core.{submodule}")
    return getattr(module, name)


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, limited to the latin-1 codec.

    Other codecs (zlib, bz2, base64...) are refused so a file cannot smuggle a decompression bomb through it.
    """
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1", errors)


# (module, name) -> a function returning the object. Both numpy module spellings are listed because the real
# CIFAR files (numpy 1, Python 2) say ``numpy.core.multiarray`` and files re-pickled with numpy 2 say
# ``numpy._core...``.
_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_attr("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_attr("multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_attr("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_attr("numeric", "_frombuffer"),
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy globals needed to rebuild arrays; any other global raises."""

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed global, or raise UnpicklingError naming the refused ``module.name``."""
        factory = _ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name}")
        return factory()


def load_restricted_pickle(path: str | Path, what: str) -> Any:
    """Unpickle ``path`` with RestrictedUnpickler (``encoding='bytes'``, as the Python 2 CIFAR files need).

    Any refusal or malformation becomes a DataError naming ``what`` and the file. The caller still checks
    the shapes and dtypes of what comes back: a safe pickle can still hold the wrong data.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        result = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{what}: {path} is not a safe CIFAR pickle ({exc}); only numpy arrays, lists, dicts, "
                        f"numbers and bytes are allowed") from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DataError(f"{what}: {path} is not a readable pickle ({type(exc).__name__}: {exc})") from None
    return result
