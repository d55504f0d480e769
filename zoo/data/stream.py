"""Split, Task and TaskStream: the tensors a continual-learning run consumes.

A stream is a list of tasks; each task owns train/val/test splits of normalised float32 inputs and int64
**global** class ids (never task-local ids: slicing logits to a task's classes is the model's business).
Everything is plain tensors, so ``stream.to("cuda")`` makes the whole benchmark device-resident.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import torch


@dataclass
class Split:
    """Inputs ``x`` (N, ...) float32, already normalised, and labels ``y`` (N,) int64 global class ids."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> "Split":
        """A copy of the split on ``device`` (the same object's tensors when already there)."""
        return Split(self.x.to(device), self.y.to(device))

    def subset(self, index: torch.Tensor) -> "Split":
        """The samples at ``index`` (an index or boolean mask tensor)."""
        return Split(self.x[index], self.y[index])

    @staticmethod
    def concat(splits: list["Split"]) -> "Split":
        """All samples of ``splits`` in order (e.g. the joint baseline's data); the list must not be empty."""
        return Split(torch.cat([s.x for s in splits]), torch.cat([s.y for s in splits]))


@dataclass
class Task:
    """One task: its global id, its classes (global ids, in class-order position) and its three splits.

    ``info`` holds JSON-ready facts about how the task was made (rotation angle, superclass, ...).
    """

    id: int
    classes: list[int]
    train: Split
    val: Split
    test: Split
    name: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "Task":
        """A copy of the task with every split on ``device``."""
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: id, name, classes, split sizes and ``info``."""
        return {"id": self.id, "name": self.name, "classes": list(self.classes),
                "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
                **({"info": dict(self.info)} if self.info else {})}


@dataclass
class TaskStream:
    """A sequence of tasks plus what describes them: class count, input shape, scenario and class order.

    ``scenario`` is ``"class"`` when tasks own disjoint classes (split, coarse) and ``"domain"`` when tasks
    share classes (permuted, rotated). ``normalisation`` records how inputs were scaled
    (``{"scale", "mean", "std", "formula"}``); ``spec`` is the resolved StreamSpec as a dict.
    """

    name: str
    tasks: list[Task]
    num_classes: int
    input_shape: tuple[int, ...]
    scenario: str
    class_order: list[int]
    normalisation: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""
    class_names: list[str] | None = None
    spec: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: int) -> Task:
        return self.tasks[index]

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    @property
    def mean(self) -> list[float] | None:
        """Per-channel mean subtracted from inputs (after scaling), or None when none was."""
        return self.normalisation.get("mean")

    @property
    def std(self) -> list[float] | None:
        """Per-channel std inputs were divided by (after scaling), or None when none was."""
        return self.normalisation.get("std")

    def to(self, device: torch.device | str) -> "TaskStream":
        """A copy of the stream with every task's tensors on ``device``."""
        return replace(self, tasks=[t.to(device) for t in self.tasks])

    def seen_classes(self, upto: int) -> list[int]:
        """Classes of tasks 0..upto (inclusive), in class order without repeats: class-IL's label space."""
        out: list[int] = []
        seen: set[int] = set()
        for task in self.tasks[: upto + 1]:
            for c in task.classes:
                if c not in seen:
                    seen.add(c)
                    out.append(c)
        return out

    def joint(self, upto: int | None = None) -> Task:
        """One task holding the data of tasks 0..upto (default all): the joint-training upper bound.

        Its id is -1 so it is never mistaken for a stream task.
        """
        tasks = self.tasks if upto is None else self.tasks[: upto + 1]
        if not tasks:
            raise IndexError("joint() of an empty stream")
        return Task(id=-1, classes=self.seen_classes(len(tasks) - 1), name="joint",
                    train=Split.concat([t.train for t in tasks]), val=Split.concat([t.val for t in tasks]),
                    test=Split.concat([t.test for t in tasks]))

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for results.json: name, dataset, scenario, shapes, class order, tasks."""
        return {"name": self.name, "dataset": self.dataset, "scenario": self.scenario,
                "num_tasks": len(self.tasks), "num_classes": self.num_classes,
                "input_shape": list(self.input_shape), "class_order": list(self.class_order),
                "normalisation": dict(self.normalisation),
                **({"class_names": list(self.class_names)} if self.class_names else {}),
                **({"spec": dict(self.spec)} if self.spec else {}),
                "tasks": [t.describe() for t in self.tasks]}
