"""The dataset catalogue: one name per dataset, each loaded into a RawDataset.

``load_dataset`` is also the entry point for code that wants raw data outside a stream, e.g. Ex-Model's
auxiliary data (Fashion-MNIST for MNIST-like tasks).
"""

from __future__ import annotations

from pathlib import Path

from .errors import StreamSpecError
from .raw import RawDataset

#: Every dataset name a stream spec accepts.
DATASETS = ("digits", "fashion_mnist", "mnist", "cifar10", "cifar100", "tiny_imagenet", "features")

# Spellings people write for the same datasets.
_ALIASES = {"fashion-mnist": "fashion_mnist", "fashionmnist": "fashion_mnist", "cifar-10": "cifar10",
            "cifar-100": "cifar100", "tiny-imagenet": "tiny_imagenet", "tinyimagenet": "tiny_imagenet",
            "tiny-imagenet-200": "tiny_imagenet"}


def canonical_dataset(name: str) -> str:
    """The catalogue name for ``name`` (case and common spellings forgiven); StreamSpecError if unknown."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise StreamSpecError(f"stream: unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    return key


def load_dataset(name: str, data_root: str | Path | None = None, download: bool = False,
                 path: str | Path | None = None) -> RawDataset:
    """Load one dataset's train and test arrays, finding (or downloading) its files.

    ``path`` is the file of the ``features`` dataset (resolved against ``data_root`` when relative and not
    found as given). Raises DataNotFoundError naming the folders searched when the data is absent.
    """
    key = canonical_dataset(name)
    if key == "digits":
        from .digits import load_digits

        return load_digits()
    if key in ("mnist", "fashion_mnist"):
        from .mnist import load_mnist_like

        return load_mnist_like(key, data_root, download)
    if key in ("cifar10", "cifar100"):
        from .cifar import load_cifar

        return load_cifar(key, data_root, download)
    if key == "tiny_imagenet":
        from .tiny_imagenet import load_tiny_imagenet

        return load_tiny_imagenet(data_root, download)
    from .features import load_features

    if path is None:
        raise StreamSpecError("stream: dataset 'features' needs 'path' (a feature stream safetensors file)")
    file = Path(path).expanduser()
    if not file.is_absolute() and not file.exists() and data_root:
        file = Path(data_root).expanduser() / file
    return load_features(file)
