"""Writers of tiny datasets in their real on-disk formats, for tests/test_data.py.

Each writer takes arrays the test chose and lays them out exactly as the official distributions do
(IDX files, CIFAR binary records and pickled batches, the tiny-imagenet-200 folder), so the loaders are
exercised on real formats without downloading anything.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
MNIST_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
               "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of ``array``: magic, big-endian sizes, big-endian values."""
    code = IDX_CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzipped when ``path`` ends in ``.gz``."""
    data = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def mnist_arrays(n_train: int = 30, n_test: int = 20, seed: int = 0, size: int = 28) -> dict[str, np.ndarray]:
    """Random uint8 images and labels cycling through 0..9 (so every class is present)."""
    rng = np.random.default_rng(seed)
    return {"train_x": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
            "train_y": (np.arange(n_train) % 10).astype(np.uint8),
            "test_x": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
            "test_y": (np.arange(n_test) % 10).astype(np.uint8)}


def write_mnist(folder: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> Path:
    """Write the four MNIST IDX files into ``folder`` (raw or ``.gz``)."""
    for key, name in MNIST_FILES.items():
        write_idx(folder / (name + (".gz" if gz else "")), arrays[key])
    return folder


def cifar_arrays(n_train: int, n_test: int, n_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random uint8 CIFAR images (N, 3, 32, 32) with labels cycling through the classes."""
    rng = np.random.default_rng(seed)
    return {"train_x": rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8),
            "train_y": np.arange(n_train) % n_classes,
            "test_x": rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8),
            "test_y": np.arange(n_test) % n_classes}


def _records(images: np.ndarray, *labels: np.ndarray) -> bytes:
    """CIFAR binary records: the label byte(s) then 3072 pixel bytes, per image."""
    cols = [np.asarray(lab, dtype=np.uint8)[:, None] for lab in labels]
    return np.concatenate(cols + [images.reshape(len(images), -1)], axis=1).tobytes()


def write_cifar10_bin(root: Path, a: dict[str, np.ndarray]) -> Path:
    """``cifar-10-batches-bin``: five train batches and ``test_batch.bin``, plus ``batches.meta.txt``."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for i, idx in enumerate(np.array_split(np.arange(len(a["train_y"])), 5), 1):
        (folder / f"data_batch_{i}.bin").write_bytes(_records(a["train_x"][idx], a["train_y"][idx]))
    (folder / "test_batch.bin").write_bytes(_records(a["test_x"], a["test_y"]))
    (folder / "batches.meta.txt").write_text("\n".join(f"name{i}" for i in range(10)) + "\n\n")
    return folder


def write_cifar100_bin(root: Path, a: dict[str, np.ndarray], coarse_of: np.ndarray) -> Path:
    """``cifar-100-binary``: ``train.bin``/``test.bin`` records (coarse byte, fine byte, pixels) and names."""
    folder = root / "cifar-100-binary"
    folder.mkdir(parents=True)
    for part, name in (("train", "train.bin"), ("test", "test.bin")):
        fine = a[f"{part}_y"]
        (folder / name).write_bytes(_records(a[f"{part}_x"], coarse_of[fine], fine))
    (folder / "coarse_label_names.txt").write_text("\n".join(f"super{i}" for i in range(20)) + "\n")
    (folder / "fine_label_names.txt").write_text("\n".join(f"fine{i}" for i in range(100)) + "\n")
    return folder


def _dump(path: Path, obj: object, protocol: int, legacy_numpy: bool = False) -> None:
    """pickle.dump ``obj``; ``legacy_numpy`` rewrites numpy 2's module name to numpy 1's, as the real files say."""
    data = pickle.dumps(obj, protocol=protocol)
    if legacy_numpy:
        assert protocol <= 2, "the text GLOBAL opcode is only used up to protocol 2"
        data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    path.write_bytes(data)


def write_cifar10_py(root: Path, a: dict[str, np.ndarray], protocol: int = 2, legacy_numpy: bool = False) -> Path:
    """``cifar-10-batches-py``: pickled dicts with b'data' (N, 3072) uint8 and b'labels' lists, plus meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, idx in enumerate(np.array_split(np.arange(len(a["train_y"])), 5), 1):
        batch = {b"batch_label": b"training batch", b"labels": [int(v) for v in a["train_y"][idx]],
                 b"data": a["train_x"][idx].reshape(len(idx), -1), b"filenames": [b"x.png"] * len(idx)}
        _dump(folder / f"data_batch_{i}", batch, protocol, legacy_numpy)
    test = {b"labels": [int(v) for v in a["test_y"]], b"data": a["test_x"].reshape(len(a["test_y"]), -1)}
    _dump(folder / "test_batch", test, protocol, legacy_numpy)
    _dump(folder / "batches.meta", {b"label_names": [f"name{i}".encode() for i in range(10)],
                                    b"num_vis": 3072}, protocol)
    return folder


def write_cifar100_py(root: Path, a: dict[str, np.ndarray], coarse_of: np.ndarray, protocol: int = 2) -> Path:
    """``cifar-100-python``: ``train``/``test`` dicts with b'fine_labels' and b'coarse_labels', plus ``meta``."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for part in ("train", "test"):
        fine = a[f"{part}_y"]
        _dump(folder / part, {b"data": a[f"{part}_x"].reshape(len(fine), -1),
                              b"fine_labels": [int(v) for v in fine],
                              b"coarse_labels": [int(v) for v in coarse_of[fine]]}, protocol)
    _dump(folder / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"super{i}".encode() for i in range(20)]}, protocol)
    return folder


def write_tiny_imagenet(root: Path, wnids: list[str], n_train: int = 3, n_val: int = 2,
                        seed: int = 0) -> Path:
    """A miniature ``tiny-imagenet-200`` folder with real 64x64 JPEGs (some grayscale, as in the real set)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for k, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(n_train):
            mode_gray = (i == 0)
            shape = (64, 64) if mode_gray else (64, 64, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(images / f"{wnid}_{i}.JPEG")
        for i in range(n_val):
            name = f"val_{k * n_val + i}.JPEG"
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "val" / "images" / name)
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder
