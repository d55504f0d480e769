"""Feature streams: precomputed feature vectors of a task sequence in one safetensors file.

This is the form of the 71-task Stream benchmark (CLIP ViT-L/14 features, 768-d), and of any benchmark whose
inputs were embedded once by a frozen encoder. File format (safetensors, no pickle):

=================  =============  ==================================================================
tensor             shape, dtype   meaning
=================  =============  ==================================================================
``train_features``  (N, D) float  one feature vector per training sample (stored F16/BF16/F32/F64)
``train_labels``    (N,) int64    global class id of each sample
``train_tasks``     (N,) int64    task id of each sample (optional: without it, tasks are made by
                                  splitting classes as for image datasets)
``test_features``   (M, D) float  the same for the test samples
``test_labels``     (M,) int64
``test_tasks``      (M,) int64    required exactly when ``train_tasks`` is present
=================  =============  ==================================================================

Header metadata (all strings): ``format = "zoo.feature_stream"``, ``version = "1"``, and optionally
``task_names`` / ``class_names`` (JSON lists) and any caller-supplied keys. Task ids run 0..T-1; a task's
classes are the labels present in its training samples. Features are used as stored (no normalisation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch

from .errors import DataError, DataNotFoundError
from .paths import write_atomically
from .raw import RawDataset

FORMAT = "zoo.feature_stream"
VERSION = "1"
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check(tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """Validate names, dtypes and matching lengths of a feature stream's tensors; DataError naming the defect."""
    for part in ("train", "test"):
        for key in ("features", "labels"):
            if f"{part}_{key}" not in tensors:
                raise DataError(f"features: {where} lacks tensor '{part}_{key}'")
    if ("train_tasks" in tensors) != ("test_tasks" in tensors):
        raise DataError(f"features: {where} must hold both 'train_tasks' and 'test_tasks' or neither")
    dims = set()
    for part in ("train", "test"):
        feats = tensors[f"{part}_features"]
        if feats.dim() != 2 or feats.dtype not in _FLOATS:
            raise DataError(f"features: {where}: '{part}_features' is {feats.dtype} {tuple(feats.shape)}, "
                            f"expected a float (N, D) tensor")
        dims.add(feats.shape[1])
        names = [f"{part}_labels"] + ([f"{part}_tasks"] if f"{part}_tasks" in tensors else [])
        for name in names:
            t = tensors[name]
            if t.dim() != 1 or t.dtype != torch.int64 or t.shape[0] != feats.shape[0]:
                raise DataError(f"features: {where}: '{name}' is {t.dtype} {tuple(t.shape)}, expected int64 "
                                f"({feats.shape[0]},)")
            if t.numel() and int(t.min()) < 0:
                raise DataError(f"features: {where}: '{name}' has negative ids")
    if len(dims) != 1:
        raise DataError(f"features: {where}: train and test features have different widths {sorted(dims)}")
    unknown = set(tensors) - {f"{p}_{k}" for p in ("train", "test") for k in ("features", "labels", "tasks")}
    if unknown:
        raise DataError(f"features: {where} has unexpected tensors {sorted(unknown)}")


def write_feature_stream(path: str | Path, *, train_features: torch.Tensor, train_labels: torch.Tensor,
                         test_features: torch.Tensor, test_labels: torch.Tensor,
                         train_tasks: torch.Tensor | None = None, test_tasks: torch.Tensor | None = None,
                         task_names: list[str] | None = None, class_names: list[str] | None = None,
                         metadata: Mapping[str, str] | None = None) -> Path:
    """Write a feature stream file (format in the module docstring) atomically and return its path.

    Labels and task ids are stored as int64; features keep their float dtype. The tensors are validated
    exactly as the reader validates them, so a file written here always loads.
    """
    tensors = {"train_features": train_features, "train_labels": train_labels,
               "test_features": test_features, "test_labels": test_labels}
    if train_tasks is not None or test_tasks is not None:
        tensors["train_tasks"], tensors["test_tasks"] = train_tasks, test_tasks  # type: ignore[assignment]
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items() if v is not None}
    for key in list(tensors):
        if not key.endswith("features") and not tensors[key].is_floating_point():
            tensors[key] = tensors[key].to(torch.int64)
    _check(tensors, str(path))
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update({"format": FORMAT, "version": VERSION})
    if task_names is not None:
        meta["task_names"] = json.dumps(list(task_names))
    if class_names is not None:
        meta["class_names"] = json.dumps(list(class_names))
    from safetensors.torch import save_file

    path = Path(path)
    write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return path


def read_feature_stream(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read and validate a feature stream file: returns (tensors, metadata); DataError on any defect."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"features: {path} does not exist (set 'path' to a feature stream file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"features: {path} is not a readable safetensors file ({exc})") from None
    if meta.get("format", FORMAT) != FORMAT:
        raise DataError(f"features: {path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    _check(tensors, str(path))
    return tensors, meta


def _json_list(meta: Mapping[str, str], key: str, path: Path) -> list[str] | None:
    """A JSON list of strings from the header metadata, or None when absent."""
    if key not in meta:
        return None
    try:
        value = json.loads(meta[key])
    except ValueError:
        value = None
    if not isinstance(value, list):
        raise DataError(f"features: {path}: metadata '{key}' is not a JSON list")
    return [str(v) for v in value]


def load_features(path: str | Path) -> RawDataset:
    """Load a feature stream file as a RawDataset of float32 (N, D) features, labels and optional task ids.

    Class count is the largest label + 1; features are stored as float32 and not rescaled.
    """
    path = Path(path)
    tensors, meta = read_feature_stream(path)
    labels = torch.cat([tensors["train_labels"], tensors["test_labels"]])
    num_classes = int(labels.max()) + 1 if labels.numel() else 0
    return RawDataset(
        name="features",
        train_x=tensors["train_features"].to(torch.float32), train_y=tensors["train_labels"],
        test_x=tensors["test_features"].to(torch.float32), test_y=tensors["test_labels"],
        num_classes=num_classes, scale=1.0,
        train_tasks=tensors.get("train_tasks"), test_tasks=tensors.get("test_tasks"),
        task_names=_json_list(meta, "task_names", path), class_names=_json_list(meta, "class_names", path),
        source=str(path), extra={k: v for k, v in meta.items() if k not in ("task_names", "class_names")},
    )
