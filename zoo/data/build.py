"""build_stream: turn a StreamSpec into a TaskStream.

Scenarios:

* ``split`` — classes, in class order (natural, or ``RandomState(class_order_seed).permutation``), cut into
  ``n_tasks`` equal groups; tasks own disjoint classes (scenario "class"). A feature file with task ids
  defines its tasks itself.
* ``permuted`` — every task holds all data; task 0 as is, task t>0 with a seeded permutation of the pixel
  positions (one permutation shared by all channels) or of the feature dimensions (scenario "domain").
* ``rotated`` — every task holds all data rotated by its angle (``rotations``, default evenly spaced over
  [0, 180)), bilinear, corners filled with black (scenario "domain").
* ``coarse`` — CIFAR-100's 20 superclasses: task t holds the 5 fine classes of superclass t.

Validation is carved from training data only, per class (per task and class for feature files), seeded by
``seed``; the test split is always the dataset's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .datasets import load_dataset
from .errors import DataError, StreamSpecError
from .raw import RawDataset
from .sampling import PERMUTATION, SUBSAMPLE, VALIDATION, rng_for, stratified_split, subsample_per_group
from .spec import StreamSpec
from .stream import Split, Task, TaskStream


_ROTATE_CHUNK = 4096


@dataclass
class _Parts:
    """Stored (not yet normalised) samples of train, val and test, each as (x, y, task ids or None)."""

    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def _carve(raw: RawDataset, spec: StreamSpec) -> _Parts:
    """Subsample train per class when asked, then carve the stratified validation split from it."""
    y = raw.train_y.numpy()
    tasks = raw.train_tasks.numpy() if raw.train_tasks is not None else None
    keys = y if tasks is None else tasks * max(raw.num_classes, 1) + y
    keep = np.arange(len(y))
    if spec.max_train_per_class is not None:
        keep = subsample_per_group(keys, spec.max_train_per_class, rng_for(spec.seed, SUBSAMPLE))
    train_idx, val_idx = stratified_split(keys[keep], spec.val_fraction, rng_for(spec.seed, VALIDATION))
    train_idx, val_idx = torch.from_numpy(keep[train_idx]), torch.from_numpy(keep[val_idx])

    def take(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        t = raw.train_tasks[index] if raw.train_tasks is not None else None
        return raw.train_x[index], raw.train_y[index], t

    return _Parts(train=take(train_idx), val=take(val_idx), test=(raw.test_x, raw.test_y, raw.test_tasks))


def _finish(x: torch.Tensor, flatten: bool) -> torch.Tensor:
    """The final form of samples: flat (N, D) when ``flatten``, else as stored."""
    return x.flatten(1) if flatten else x


def _select(raw: RawDataset, part: tuple, mask: torch.Tensor, flatten: bool) -> Split:
    """Normalise the samples of ``part`` chosen by ``mask`` into a Split (only the selection is converted)."""
    x, y, _ = part
    index = mask.nonzero().squeeze(1)
    return Split(_finish(raw.normalise(x[index]), flatten), y[index])


def _class_order(classes: list[int], seed: int | None) -> list[int]:
    """``classes`` as given (seed None) or reordered by ``RandomState(seed).permutation`` (PyCIL's rule)."""
    if seed is None:
        return list(classes)
    return [classes[i] for i in np.random.RandomState(seed).permutation(len(classes))]


def _task_layout(spec: StreamSpec, n_classes: int) -> int:
    """Classes per task for a split stream, checking that the numbers divide ``n_classes`` evenly."""
    n, per = spec.n_tasks, spec.classes_per_task
    if n is None and per is None:
        n = 5 if n_classes <= 10 else 10
        if n_classes % n:
            raise StreamSpecError(f"stream: {n_classes} classes do not split into {n} default tasks; "
                                  f"set n_tasks or classes_per_task")
    if n is not None and per is not None and n * per != n_classes:
        raise StreamSpecError(f"stream: n_tasks={n} x classes_per_task={per} does not make {n_classes} classes")
    if n is not None:
        if n > n_classes or n_classes % n:
            raise StreamSpecError(f"stream: n_tasks={n} does not divide {n_classes} classes")
        return n_classes // n
    assert per is not None
    if per > n_classes or n_classes % per:
        raise StreamSpecError(f"stream: classes_per_task={per} does not divide {n_classes} classes")
    return per


def _split_tasks(raw: RawDataset, parts: _Parts, spec: StreamSpec, flatten: bool) -> tuple[list[Task], list[int]]:
    """Tasks of disjoint class groups, in class order; returns (tasks, class order)."""
    if raw.train_tasks is not None:
        return _file_tasks(raw, parts, spec, flatten)
    if raw.name == "features":  # classes are whatever labels the file holds
        classes = sorted(set(raw.train_y.tolist()) | set(raw.test_y.tolist()))
    else:
        classes = list(range(raw.num_classes))
    per = _task_layout(spec, len(classes))
    order = _class_order(classes, spec.class_order_seed)
    tasks = []
    for t in range(len(order) // per):
        group = order[t * per:(t + 1) * per]
        wanted = torch.tensor(group, dtype=torch.int64)
        splits = [_select(raw, p, torch.isin(p[1], wanted), flatten) for p in (parts.train, parts.val, parts.test)]
        label = ", ".join(raw.class_names[c] for c in group) if raw.class_names else ", ".join(map(str, group))
        tasks.append(Task(t, group, *splits, name=f"classes {label}"))
    return tasks, order


def _file_tasks(raw: RawDataset, parts: _Parts, spec: StreamSpec, flatten: bool) -> tuple[list[Task], list[int]]:
    """Tasks given by a feature file's task ids; each task's classes are the labels of its training data."""
    for name in ("classes_per_task", "class_order_seed"):
        if getattr(spec, name) is not None:
            raise StreamSpecError(f"stream: {name} does not apply: {raw.source} defines its own tasks")
    assert raw.train_tasks is not None and raw.test_tasks is not None
    n_file = int(raw.train_tasks.max()) + 1 if raw.train_tasks.numel() else 0
    n = spec.n_tasks if spec.n_tasks is not None else n_file
    if n > n_file:
        raise StreamSpecError(f"stream: n_tasks={n} but {raw.source} holds {n_file} tasks")
    tasks, order, seen = [], [], set()
    for t in range(n):
        in_train = raw.train_tasks == t
        if not bool(in_train.any()):
            raise DataError(f"features: {raw.source}: task {t} has no training samples")
        classes = sorted(set(raw.train_y[in_train].tolist()))
        splits = [_select(raw, p, p[2] == t, flatten) for p in (parts.train, parts.val, parts.test)]
        name = raw.task_names[t] if raw.task_names and t < len(raw.task_names) else f"task {t}"
        tasks.append(Task(t, classes, *splits, name=name))
        order.extend(c for c in classes if c not in seen)
        seen.update(classes)
    return tasks, order


def _permuted_tasks(raw: RawDataset, parts: _Parts, spec: StreamSpec, flatten: bool) -> list[Task]:
    """Task 0 unchanged, task t>0 with its own seeded permutation of pixel positions or feature dimensions."""
    if raw.train_tasks is not None:
        raise StreamSpecError(f"stream: scenario 'permuted' needs a feature file without task ids ({raw.source})")
    n = spec.n_tasks if spec.n_tasks is not None else 10
    base = [raw.normalise(p[0]) for p in (parts.train, parts.val, parts.test)]
    labels = [p[1] for p in (parts.train, parts.val, parts.test)]
    positions = int(np.prod(raw.sample_shape[1:])) if raw.is_image else raw.sample_shape[0]
    rng = rng_for(spec.seed, PERMUTATION)
    classes = list(range(raw.num_classes))
    tasks = []
    for t in range(n):
        perm = None if t == 0 else torch.from_numpy(rng.permutation(positions))
        splits = []
        for x, y in zip(base, labels):
            if perm is not None and raw.is_image:
                # Permute the H*W positions, the same way in every channel.
                x = x.reshape(x.shape[0], x.shape[1], positions)[:, :, perm].reshape(x.shape)
            elif perm is not None:
                x = x[:, perm]
            splits.append(Split(_finish(x, flatten), y.clone()))
        tasks.append(Task(t, classes, *splits, name="identity" if t == 0 else f"permutation {t}",
                          info={"permutation": "identity" if t == 0 else f"seeded #{t}"}))
    return tasks


def _rotated_tasks(raw: RawDataset, parts: _Parts, spec: StreamSpec, flatten: bool) -> list[Task]:
    """Every task holds all data rotated by its angle, with black (zero-intensity) corners."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import rotate

    if not raw.is_image:
        raise StreamSpecError(f"stream: scenario 'rotated' needs images; {raw.name} holds vectors")
    n = spec.n_tasks if spec.n_tasks is not None else (len(spec.rotations) if spec.rotations else 10)
    angles = spec.rotations if spec.rotations is not None else [180.0 * t / n for t in range(n)]
    base = [raw.normalise(p[0]) for p in (parts.train, parts.val, parts.test)]
    labels = [p[1] for p in (parts.train, parts.val, parts.test)]
    fill = raw.background()
    classes = list(range(raw.num_classes))
    tasks = []
    for t, angle in enumerate(angles):
        splits = []
        for x, y in zip(base, labels):
            if angle % 360 != 0 and len(x):  # angle 0 stays bit-exact instead of being resampled
                # In chunks: rotate builds a sampling grid twice the size of its input.
                x = torch.cat([rotate(c, angle, interpolation=InterpolationMode.BILINEAR, fill=fill)
                               for c in x.split(_ROTATE_CHUNK)])
            splits.append(Split(_finish(x, flatten), y.clone()))
        tasks.append(Task(t, classes, *splits, name=f"rotated {angle:g} deg", info={"angle": angle}))
    return tasks


def _coarse_tasks(raw: RawDataset, parts: _Parts, flatten: bool) -> tuple[list[Task], list[int]]:
    """CIFAR-100's superclasses as tasks: task t holds the fine classes whose coarse label is t."""
    if raw.train_coarse is None or raw.test_coarse is None:
        raise DataError(f"{raw.name}: {raw.source} has no coarse labels")
    fine = torch.cat([raw.train_y, raw.test_y]).tolist()
    coarse = torch.cat([raw.train_coarse, raw.test_coarse]).tolist()
    parent: dict[int, int] = {}
    for f, c in zip(fine, coarse):
        if parent.setdefault(f, c) != c:
            raise DataError(f"{raw.name}: {raw.source}: fine class {f} appears under superclasses "
                            f"{parent[f]} and {c}")
    tasks, order = [], []
    for t in range(20):
        group = sorted(f for f, c in parent.items() if c == t)
        if not group:
            raise DataError(f"{raw.name}: {raw.source}: superclass {t} has no fine classes")
        wanted = torch.tensor(group, dtype=torch.int64)
        splits = [_select(raw, p, torch.isin(p[1], wanted), flatten) for p in (parts.train, parts.val, parts.test)]
        name = raw.coarse_names[t] if raw.coarse_names else f"superclass {t}"
        tasks.append(Task(t, group, *splits, name=name, info={"superclass": t}))
        order.extend(group)
    return tasks, order


def build_stream(spec: StreamSpec | Mapping[str, Any]) -> TaskStream:
    """Load the dataset a spec names and cut it into a TaskStream (scenarios in the module docstring).

    ``spec`` is a StreamSpec or a recipe mapping (validated; unknown keys are errors). Raises
    StreamSpecError for impossible layouts, DataNotFoundError when the data is absent, DataError when a
    file is malformed or unsafe.
    """
    spec = StreamSpec.coerce(spec)
    raw = load_dataset(spec.dataset, spec.data_root, spec.download, spec.path)
    if spec.flatten is False and not raw.is_image:
        raise StreamSpecError(f"stream: flatten: false needs images; {raw.name} holds vectors")
    flatten = spec.flatten if spec.flatten is not None else raw.name == "digits"
    parts = _carve(raw, spec)
    if spec.scenario == "split":
        tasks, order = _split_tasks(raw, parts, spec, flatten)
    elif spec.scenario == "coarse":
        tasks, order = _coarse_tasks(raw, parts, flatten)
    elif spec.scenario == "permuted":
        tasks, order = _permuted_tasks(raw, parts, spec, flatten), list(range(raw.num_classes))
    else:
        tasks, order = _rotated_tasks(raw, parts, spec, flatten), list(range(raw.num_classes))
    disjoint = sum(len(t.classes) for t in tasks) == len({c for t in tasks for c in t.classes})
    shape = (int(np.prod(raw.sample_shape)),) if flatten else raw.sample_shape
    name = f"{spec.scenario}-{spec.dataset}"
    if spec.dataset == "features":  # name it after the file; a file's own tasks need no scenario prefix
        stem = Path(raw.source).stem
        name = f"features-{stem}" if raw.train_tasks is not None else f"{spec.scenario}-features-{stem}"
    return TaskStream(
        name=name, tasks=tasks, num_classes=raw.num_classes, input_shape=tuple(shape),
        scenario="class" if spec.scenario in ("split", "coarse") and disjoint else "domain",
        class_order=order, normalisation=raw.normalisation(), dataset=spec.dataset,
        class_names=raw.class_names, spec=spec.to_dict(),
    )
