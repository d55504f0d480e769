"""CIFAR-10 and CIFAR-100 from their binary or python distributions, or torchvision's download.

Binary version (``cifar-10-batches-bin``, ``cifar-100-binary``): fixed-size records of label byte(s) followed
by 3072 pixel bytes (1024 red, 1024 green, 1024 blue, row-major), parsed with numpy. Python version
(``cifar-10-batches-py``, ``cifar-100-python``): pickled dicts, read through ``safe_pickle`` so a tampered file
cannot run code. CIFAR-100 keeps its 20 coarse (superclass) labels for the coarse scenario.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError, DataNotFoundError
from .paths import default_data_root, search_roots
from .raw import RawDataset
from .safe_pickle import load_restricted_pickle

_PIXELS = 3 * 32 * 32

# Folder names and files of each distribution, plus the usual train-set channel mean/std.
_INFO: dict[str, dict[str, Any]] = {
    "cifar10": {
        "bin": ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"]),
        "py": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
        "classes": 10,
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
    },
    "cifar100": {
        "bin": ("cifar-100-binary", ["train.bin"], ["test.bin"]),
        "py": ("cifar-100-python", ["train"], ["test"]),
        "classes": 100,
        "mean": (0.5071, 0.4865, 0.4409),
        "std": (0.2673, 0.2564, 0.2762),
    },
}


def _read_names(path: Path) -> list[str] | None:
    """Non-empty lines of a label-names text file, or None when it is absent."""
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]


def _parse_binary(path: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Parse one binary batch file into (images (N,3,32,32) uint8, fine labels, coarse labels or None).

    CIFAR-100 records carry the coarse label byte first, then the fine one.
    """
    n_labels = 2 if name == "cifar100" else 1
    record = n_labels + _PIXELS
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{name}: cannot read {path} ({exc})") from None
    if data.size == 0 or data.size % record:
        raise DataError(f"{name}: {path} has {data.size} bytes, not a whole number of {record}-byte records")
    rows = data.reshape(-1, record)
    images = rows[:, n_labels:].reshape(-1, 3, 32, 32)
    fine = rows[:, n_labels - 1].astype(np.int64)
    coarse = rows[:, 0].astype(np.int64) if n_labels == 2 else None
    return images, fine, coarse


def _get(batch: dict, key: str) -> Any:
    """``batch[key]`` under either bytes keys (Python 2 pickles) or str keys (re-pickled copies)."""
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


def _parse_python(path: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Unpickle one python-version batch safely and check it holds uint8 (N, 3072) data and N labels."""
    batch = load_restricted_pickle(path, name)
    if not isinstance(batch, dict):
        raise DataError(f"{name}: {path} does not hold a dict")
    data = _get(batch, "data")
    fine = _get(batch, "fine_labels" if name == "cifar100" else "labels")
    coarse = _get(batch, "coarse_labels") if name == "cifar100" else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        shown = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{name}: {path}: 'data' is {shown}, expected a uint8 (N, {_PIXELS}) array")

    def labels(value: Any, key: str) -> np.ndarray:
        try:
            out = np.asarray(value, dtype=np.int64)
        except (TypeError, ValueError):
            out = np.zeros(0)
        if out.shape != (data.shape[0],):
            raise DataError(f"{name}: {path}: '{key}' is not a list of {data.shape[0]} integer labels")
        return out

    fine_arr = labels(fine, "fine_labels" if name == "cifar100" else "labels")
    coarse_arr = labels(coarse, "coarse_labels") if name == "cifar100" else None
    return data.reshape(-1, 3, 32, 32), fine_arr, coarse_arr


def _python_names(folder: Path, name: str) -> tuple[list[str] | None, list[str] | None]:
    """Fine and coarse class names from the python version's meta pickle, when present."""
    meta = folder / ("meta" if name == "cifar100" else "batches.meta")
    if not meta.is_file():
        return None, None
    content = load_restricted_pickle(meta, name)
    if not isinstance(content, dict):
        return None, None

    def decode(value: Any) -> list[str] | None:
        if not isinstance(value, list):
            return None
        return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in value]

    if name == "cifar100":
        return decode(_get(content, "fine_label_names")), decode(_get(content, "coarse_label_names"))
    return decode(_get(content, "label_names")), None


def _locate(name: str, data_root: str | Path | None, download: bool) -> tuple[str, Path]:
    """Find a complete binary or python distribution of ``name``: returns ("bin" | "py", folder)."""
    info = _INFO[name]
    looked: list[Path] = []
    for root in search_roots(data_root):
        for kind in ("bin", "py"):
            folder_name, train, test = info[kind]
            folder = root / folder_name
            looked.append(folder)
            if all((folder / f).is_file() for f in train + test):
                return kind, folder
    if download:
        from torchvision import datasets
        from torchvision.datasets.utils import download_and_extract_archive

        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        root = Path(data_root).expanduser() if data_root else default_data_root()
        # The archive helper alone: torchvision's dataset classes would unpickle the batches unrestricted.
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
        folder = root / info["py"][0]
        if all((folder / f).is_file() for f in info["py"][1] + info["py"][2]):
            return "py", folder
        raise DataNotFoundError(f"{name}: download finished but {folder} lacks the batch files")
    raise DataNotFoundError(
        f"{name}: batch files not found (looked in {', '.join(map(str, looked))}); get the binary or python "
        f"version from https://www.cs.toronto.edu/~kriz/cifar.html into a folder and pass it as --data-root DIR (or stream.data_root, or $ZOO_DATA_ROOT), or set download: true")


def load_cifar(name: str, data_root: str | Path | None = None, download: bool = False) -> RawDataset:
    """Load ``cifar10`` or ``cifar100`` as uint8 images (N, 3, 32, 32) with int64 fine labels.

    CIFAR-100 also returns its coarse labels (and names when the distribution ships them).
    """
    info = _INFO[name]
    kind, folder = _locate(name, data_root, download)
    _, train_files, test_files = info[kind]
    parse = _parse_binary if kind == "bin" else _parse_python

    def read(files: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        parts = [parse(folder / f, name) for f in files]
        x = torch.from_numpy(np.ascontiguousarray(np.concatenate([p[0] for p in parts])))
        y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        coarse = torch.from_numpy(np.concatenate([p[2] for p in parts])) if parts[0][2] is not None else None
        limit = info["classes"]
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= limit):
            raise DataError(f"{name}: {folder} has labels outside 0..{limit - 1}")
        if coarse is not None and coarse.numel() and (int(coarse.min()) < 0 or int(coarse.max()) >= 20):
            raise DataError(f"{name}: {folder} has coarse labels outside 0..19")
        return x, y, coarse

    train_x, train_y, train_coarse = read(train_files)
    test_x, test_y, test_coarse = read(test_files)
    if kind == "bin":
        if name == "cifar100":
            fine_names = _read_names(folder / "fine_label_names.txt")
            coarse_names = _read_names(folder / "coarse_label_names.txt")
        else:
            fine_names, coarse_names = _read_names(folder / "batches.meta.txt"), None
    else:
        fine_names, coarse_names = _python_names(folder, name)
    return RawDataset(
        name=name, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
        num_classes=info["classes"], scale=255.0, mean=info["mean"], std=info["std"],
        class_names=fine_names if fine_names and len(fine_names) == info["classes"] else None,
        train_coarse=train_coarse, test_coarse=test_coarse,
        coarse_names=coarse_names if coarse_names and len(coarse_names) == 20 else None,
        source=str(folder),
    )
