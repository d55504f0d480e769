"""Tiny ImageNet (200 classes, 64x64) from ``ROOT/tiny-imagenet-200``, with a decoded cache.

Layout read: ``wnids.txt``; ``train/<wnid>/images/*.JPEG`` (500 per class); ``val/images/*.JPEG`` with
``val/val_annotations.txt`` (tab-separated file name and wnid). The official test labels are not public, so
the val set serves as zoo's test split (validation is carved from train as for every dataset). Class ids
follow the sorted wnids, as torchvision's ImageFolder numbers them.

Decoding the 110,000 JPEGs takes a while, so the uint8 arrays are saved once as
``tiny-imagenet-200/zoo-decoded-uint8.safetensors`` (or, when that folder is read-only, under the default data
root) and reused while the source still has the same classes and file counts.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .errors import DataError, DataNotFoundError
from .paths import default_data_root, is_writable_dir, search_roots, write_atomically
from .raw import RawDataset

FOLDER = "tiny-imagenet-200"
CACHE_NAME = "zoo-decoded-uint8.safetensors"
CACHE_VERSION = "1"
SIZE = 64
# Mean/std of the Tiny ImageNet training images (the constants commonly used with it).
MEAN = (0.4802, 0.4481, 0.3975)
STD = (0.2302, 0.2265, 0.2262)
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def _list_sources(folder: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Sorted wnids and the (file, class id) lists of train and val images; DataError on a broken layout."""
    wnids_file = folder / "wnids.txt"
    wnids = sorted({line.strip() for line in wnids_file.read_text().splitlines() if line.strip()})
    if not wnids:
        raise DataError(f"tiny_imagenet: {wnids_file} lists no classes")
    index = {w: i for i, w in enumerate(wnids)}
    train: list[tuple[Path, int]] = []
    for wnid in wnids:
        images = folder / "train" / wnid / "images"
        if not images.is_dir():
            raise DataError(f"tiny_imagenet: {images} is missing (class listed in wnids.txt)")
        names = sorted(e.name for e in os.scandir(images) if e.name.lower().endswith((".jpeg", ".jpg")))
        train.extend((images / n, index[wnid]) for n in names)
    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise DataError(f"tiny_imagenet: {annotations} is missing")
    val: list[tuple[Path, int]] = []
    for number, line in enumerate(annotations.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise DataError(f"tiny_imagenet: {annotations}:{number}: expected 'file<TAB>wnid' with a known wnid")
        val.append((folder / "val" / "images" / parts[0], index[parts[1]]))
    val.sort()
    return wnids, train, val


def _fingerprint(wnids: list[str], train: list, val: list) -> str:
    """What the cache must match: classes and file names (not contents; re-encoding in place is not expected)."""
    h = hashlib.sha256(json.dumps(wnids).encode())
    for path, label in train + val:
        h.update(f"{path.parent.parent.name}/{path.name}:{label}\n".encode())
    return h.hexdigest()


def _decode(files: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode JPEGs into (N, 3, 64, 64) uint8 and labels, using threads (Pillow releases the GIL)."""
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(files), SIZE, SIZE, 3), dtype=np.uint8)

    def one(i: int) -> None:
        path = files[i][0]
        try:
            with Image.open(path) as img:
                arr = np.asarray(img.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"tiny_imagenet: cannot decode {path} ({exc})") from None
        if arr.shape != (SIZE, SIZE, 3):
            raise DataError(f"tiny_imagenet: {path} is {arr.shape[1]}x{arr.shape[0]}, expected {SIZE}x{SIZE}")
        out[i] = arr

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(len(files)), chunksize=256))
    x = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([label for _, label in files], dtype=torch.int64)
    return x, y


def _fallback_cache(folder: Path) -> Path:
    """The cache location under the default data root, used when the data folder is read-only."""
    tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    return default_data_root() / "tiny-imagenet-cache" / f"{tag}-{CACHE_NAME}"


def _read_cache(path: Path, fingerprint: str | None) -> dict[str, torch.Tensor] | None:
    """The cached tensors and wnids if ``path`` is a valid cache for ``fingerprint`` (None: accept any)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "zoo.tiny_imagenet" or meta.get("version") != CACHE_VERSION:
                return None
            if fingerprint is not None and meta.get("fingerprint") != fingerprint:
                return None
            tensors = {k: f.get_tensor(k) for k in ("train_x", "train_y", "test_x", "test_y")}
        tensors["wnids"] = json.loads(meta["wnids"])  # type: ignore[assignment]
        return tensors
    except (SafetensorError, OSError, KeyError, ValueError):
        return None  # a damaged cache is simply rebuilt


def _locate(data_root: str | Path | None, download: bool) -> Path:
    """The ``tiny-imagenet-200`` folder (one with wnids.txt), downloading it when allowed."""
    looked = []
    for root in search_roots(data_root):
        folder = root / FOLDER
        looked.append(folder)
        if (folder / "wnids.txt").is_file():
            return folder
    if download:
        from torchvision.datasets.utils import download_and_extract_archive

        root = Path(data_root).expanduser() if data_root else default_data_root()
        download_and_extract_archive(URL, str(root))
        if (root / FOLDER / "wnids.txt").is_file():
            return root / FOLDER
        raise DataNotFoundError(f"tiny_imagenet: download finished but {root / FOLDER} lacks wnids.txt")
    raise DataNotFoundError(
        f"tiny_imagenet: {FOLDER} not found (looked in {', '.join(map(str, looked))}); unzip {URL} into "
        f"--data-root, or set download: true")


def load_tiny_imagenet(data_root: str | Path | None = None, download: bool = False) -> RawDataset:
    """Load Tiny ImageNet as uint8 images (N, 3, 64, 64): train 100,000 and (official val as) test 10,000.

    Uses the decoded cache when it matches the source folder; otherwise decodes and writes the cache.
    """
    from safetensors.torch import save_file

    folder = _locate(data_root, download)
    caches = [folder / CACHE_NAME, _fallback_cache(folder)]
    if not (folder / "train").is_dir():  # only the cache was copied: trust it
        tensors = _read_cache(caches[0], None) or _read_cache(caches[1], None)
        if tensors is None:
            raise DataNotFoundError(f"tiny_imagenet: {folder / 'train'} is missing and no decoded cache exists")
    else:
        wnids, train, val = _list_sources(folder)
        fingerprint = _fingerprint(wnids, train, val)
        tensors = _read_cache(caches[0], fingerprint) or _read_cache(caches[1], fingerprint)
        if tensors is None:
            train_x, train_y = _decode(train)
            test_x, test_y = _decode(val)
            tensors = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
            meta = {"format": "zoo.tiny_imagenet", "version": CACHE_VERSION, "fingerprint": fingerprint,
                    "wnids": json.dumps(wnids)}
            cache = caches[0] if is_writable_dir(folder) else caches[1]
            try:
                write_atomically(cache, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
            except OSError:
                pass  # no writable cache location: decode again next time rather than fail now
            tensors["wnids"] = wnids  # type: ignore[assignment]
    wnids = list(tensors.pop("wnids"))  # type: ignore[arg-type]
    names = _class_names(folder, wnids)
    return RawDataset(
        name="tiny_imagenet", train_x=tensors["train_x"], train_y=tensors["train_y"],
        test_x=tensors["test_x"], test_y=tensors["test_y"], num_classes=len(wnids), scale=255.0,
        mean=MEAN, std=STD, class_names=names, source=str(folder), extra={"wnids": wnids},
    )


def _class_names(folder: Path, wnids: list[str]) -> list[str]:
    """Human-readable names from ``words.txt`` when present (first synonym), else the wnids themselves."""
    words = folder / "words.txt"
    table: dict[str, str] = {}
    if words.is_file():
        for line in words.read_text(errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            table[wnid] = text.split(",")[0].strip()
    return [table.get(w) or w for w in wnids]
