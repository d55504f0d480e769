"""MNIST and Fashion-MNIST from IDX files: a data root, Debian's package, or torchvision's download.

Search order for the four IDX files (each raw or ``.gz``): ``ROOT/<Folder>/raw``, ``ROOT/<Folder>``, ``ROOT``
for the spec's ``data_root`` and then the default data root; for Fashion-MNIST, Debian's
``dataset-fashion-mnist`` package (gzipped files in ``/usr/share/datasets/fashion-mnist``), gunzipped once into
``<default data root>/FashionMNIST/raw``; finally torchvision's mirrors when ``download`` is true.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import torch

from .errors import DataError, DataNotFoundError
from .idx import read_idx
from .paths import default_data_root, is_writable_dir, search_roots, write_atomically
from .raw import RawDataset

#: Where Debian's ``dataset-fashion-mnist`` package installs its gzipped IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}

# Per-dataset facts: torchvision's folder name, the train-set pixel mean/std (the usual published constants),
# and class names.
_INFO = {
    "mnist": {
        "folder": "MNIST",
        "mean": (0.1307,),
        "std": (0.3081,),
        "classes": [str(i) for i in range(10)],
    },
    "fashion_mnist": {
        "folder": "FashionMNIST",
        "mean": (0.2860,),
        "std": (0.3530,),
        "classes": ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                    "ankle boot"],
    },
}


def _find_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (raw preferred over ``.gz``), or None unless all four are there."""
    found: dict[str, Path] = {}
    for key, name in FILES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _gunzip_debian(cache: Path) -> dict[str, Path] | None:
    """Gunzip Debian's Fashion-MNIST into ``cache`` once; None when the cache cannot be written.

    Decompressing once keeps later loads to a plain read; each file is renamed into place only when complete.
    """
    if not is_writable_dir(cache):
        return None
    out: dict[str, Path] = {}
    for key, name in FILES.items():
        target = cache / name
        if not target.is_file():
            source = DEBIAN_FASHION_MNIST / f"{name}.gz"

            def write(tmp: Path, source: Path = source) -> None:
                with gzip.open(source, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)

            try:
                write_atomically(target, write)
            except (OSError, EOFError) as exc:
                raise DataError(f"fashion_mnist: cannot gunzip {source} into {cache} ({exc})") from None
        out[key] = target
    return out


def _download(name: str, root: Path) -> dict[str, Path]:
    """Fetch the four gzipped files from torchvision's mirrors into ``root/<Folder>/raw`` and return them.

    Only torchvision's download helpers are used (not its dataset classes), so its checksums apply and no
    other loading code runs.
    """
    from torchvision import datasets
    from torchvision.datasets.utils import download_url

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    raw = root / _INFO[name]["folder"] / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for filename, md5 in cls.resources:
        if (raw / filename).is_file():
            continue
        errors = []
        for mirror in cls.mirrors:
            try:
                download_url(f"{mirror}{filename}", str(raw), filename=filename, md5=md5)
                break
            except Exception as exc:  # network and checksum failures alike: try the next mirror
                errors.append(f"{mirror}: {exc}")
        else:
            raise DataNotFoundError(f"{name}: download of {filename} failed ({'; '.join(errors)})")
    found = _find_files(raw)
    if found is None:
        raise DataNotFoundError(f"{name}: download finished but {raw} lacks the IDX files")
    return found


def locate(name: str, data_root: str | Path | None, download: bool) -> dict[str, Path]:
    """Find (or fetch) the four IDX files of ``name``; DataNotFoundError naming every folder searched.

    ``name`` is ``mnist`` or ``fashion_mnist``.
    """
    folder = _INFO[name]["folder"]
    looked: list[Path] = []
    for root in search_roots(data_root):
        for candidate in (root / folder / "raw", root / folder, root):
            looked.append(candidate)
            found = _find_files(candidate)
            if found:
                return found
    if name == "fashion_mnist":
        looked.append(DEBIAN_FASHION_MNIST)
        if _find_files(DEBIAN_FASHION_MNIST):
            cached = _gunzip_debian(default_data_root() / folder / "raw")
            return cached or _find_files(DEBIAN_FASHION_MNIST)  # type: ignore[return-value]
    if download:
        return _download(name, Path(data_root).expanduser() if data_root else default_data_root())
    hint = "apt-get install dataset-fashion-mnist, or " if name == "fashion_mnist" else ""
    raise DataNotFoundError(
        f"{name}: IDX files not found (looked in {', '.join(map(str, looked))}); {hint}pass --data-root DIR "
        f"(or stream.data_root, or $ZOO_DATA_ROOT) naming a folder that holds {folder}/raw, or set download: true")


def load_mnist_like(name: str, data_root: str | Path | None = None, download: bool = False) -> RawDataset:
    """Load MNIST or Fashion-MNIST as uint8 images (N, 1, 28, 28) with int64 labels.

    Shapes and label ranges are checked, so a mislabelled file (e.g. images and labels swapped) gives a
    DataError naming it rather than a silent mismatch.
    """
    info = _INFO[name]
    files = locate(name, data_root, download)
    arrays = {key: read_idx(path) for key, path in files.items()}
    for part in ("train", "test"):
        x, y = arrays[f"{part}_x"], arrays[f"{part}_y"]
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.dtype != np.uint8:
            raise DataError(f"{name}: {files[part + '_x']} holds {x.dtype} {x.shape} and {files[part + '_y']} "
                            f"holds {y.shape}: expected uint8 (N, H, W) images and N labels")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise DataError(f"{name}: {files[part + '_y']} has labels outside 0..9")

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a).copy()).unsqueeze(1)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return RawDataset(
        name=name,
        train_x=images(arrays["train_x"]), train_y=labels(arrays["train_y"]),
        test_x=images(arrays["test_x"]), test_y=labels(arrays["test_y"]),
        num_classes=10, scale=255.0, mean=info["mean"], std=info["std"], class_names=list(info["classes"]),
        source=str(files["train_x"].parent),
    )
