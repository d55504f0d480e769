"""StreamSpec: the ``stream:`` section of a recipe, validated field by field.

Checks that need only the spec (types, ranges, combinations) run on construction; checks that need the
dataset (does ``n_tasks`` divide its class count?) run in ``build_stream``. Every failure is a
StreamSpecError with one line naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

from .datasets import canonical_dataset
from .errors import StreamSpecError

#: Scenario names a spec accepts.
SCENARIOS = ("split", "permuted", "rotated", "coarse")


def _int(name: str, value: Any, minimum: int | None = None) -> int | None:
    """``value`` as an int (None passes); bools and floats are refused, being almost always a typo."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise StreamSpecError(f"stream: {name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise StreamSpecError(f"stream: {name} must be >= {minimum}, got {value}")
    return int(value)


@dataclass
class StreamSpec:
    """How to build a task stream: dataset, scenario, task layout, class order, validation and seeds.

    See ``build_stream`` for what each scenario makes. Defaults when ``n_tasks`` is unset: split uses 5 tasks
    for up to 10 classes, else 10; permuted and rotated use 10 (rotated: as many as ``rotations``); coarse
    always has 20. ``flatten`` chooses the sample form: None keeps each dataset's natural form (digits flat
    (N, 64), other images (N, C, H, W)); True flattens images to (N, D); False gives digits as (N, 1, 8, 8).
    """

    dataset: str
    scenario: str = "split"
    n_tasks: int | None = None
    classes_per_task: int | None = None
    class_order_seed: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    data_root: str | None = None
    download: bool = False
    path: str | None = None
    max_train_per_class: int | None = None
    rotations: list[float] | None = None
    flatten: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str):
            raise StreamSpecError(f"stream: dataset must be a name, got {self.dataset!r}")
        self.dataset = canonical_dataset(self.dataset)
        if self.scenario not in SCENARIOS:
            raise StreamSpecError(f"stream: unknown scenario {self.scenario!r} (choose from {', '.join(SCENARIOS)})")
        self.n_tasks = _int("n_tasks", self.n_tasks, 1)
        self.classes_per_task = _int("classes_per_task", self.classes_per_task, 1)
        self.class_order_seed = _int("class_order_seed", self.class_order_seed, 0)
        self.seed = _int("seed", self.seed, 0)  # type: ignore[assignment]
        if self.seed is None:
            raise StreamSpecError("stream: seed must be an integer, got None")
        self.max_train_per_class = _int("max_train_per_class", self.max_train_per_class, 1)
        vf = self.val_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 <= vf < 1:
            raise StreamSpecError(f"stream: val_fraction must be a number in [0, 1), got {vf!r}")
        self.val_fraction = float(vf)
        for name in ("download",):
            if not isinstance(getattr(self, name), bool):
                raise StreamSpecError(f"stream: {name} must be true or false, got {getattr(self, name)!r}")
        if self.flatten is not None and not isinstance(self.flatten, bool):
            raise StreamSpecError(f"stream: flatten must be true, false or null, got {self.flatten!r}")
        for name in ("data_root", "path"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, (str, os.PathLike)) or not str(value):
                    raise StreamSpecError(f"stream: {name} must be a path, got {value!r}")
                setattr(self, name, os.fspath(value))
        self._check_combinations()

    def _check_combinations(self) -> None:
        """Field combinations that are wrong whatever the dataset holds."""
        if self.classes_per_task is not None and self.scenario != "split":
            raise StreamSpecError(f"stream: classes_per_task applies only to scenario 'split', not {self.scenario!r}")
        if self.scenario == "coarse":
            if self.dataset != "cifar100":
                raise StreamSpecError(f"stream: scenario 'coarse' needs dataset 'cifar100', not {self.dataset!r}")
            if self.n_tasks not in (None, 20):
                raise StreamSpecError(f"stream: scenario 'coarse' has 20 tasks (one per superclass), "
                                      f"not n_tasks={self.n_tasks}")
            if self.class_order_seed is not None:
                raise StreamSpecError("stream: class_order_seed does not apply to scenario 'coarse' "
                                      "(task t is superclass t)")
        if self.scenario in ("permuted", "rotated") and self.class_order_seed is not None:
            raise StreamSpecError(f"stream: class_order_seed does not apply to scenario {self.scenario!r} "
                                  f"(every task has all classes)")
        if self.scenario == "rotated" and self.dataset == "features":
            raise StreamSpecError("stream: scenario 'rotated' needs images; dataset 'features' holds vectors")
        if self.rotations is not None:
            if self.scenario != "rotated":
                raise StreamSpecError(f"stream: rotations apply only to scenario 'rotated', not {self.scenario!r}")
            if not isinstance(self.rotations, (list, tuple)) or not self.rotations or not all(
                    isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)
                    for a in self.rotations):
                raise StreamSpecError(f"stream: rotations must be a non-empty list of angles in degrees, "
                                      f"got {self.rotations!r}")
            self.rotations = [float(a) for a in self.rotations]
            if self.n_tasks is not None and self.n_tasks != len(self.rotations):
                raise StreamSpecError(f"stream: n_tasks={self.n_tasks} but {len(self.rotations)} rotations are given")
        if self.path is not None and self.dataset != "features":
            raise StreamSpecError(f"stream: path applies only to dataset 'features', not {self.dataset!r}")
        if self.dataset == "features" and self.path is None:
            raise StreamSpecError("stream: dataset 'features' needs 'path' (a feature stream safetensors file)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StreamSpec":
        """Build a spec from a recipe mapping; an unknown key is an error naming it and the known keys."""
        if not isinstance(data, Mapping):
            raise StreamSpecError(f"stream: expected a mapping of fields, got {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in known:
                raise StreamSpecError(f"stream: unknown key {key!r} (known: {', '.join(known)})")
        if "dataset" not in data:
            raise StreamSpecError("stream: missing required key 'dataset'")
        return cls(**dict(data))

    @classmethod
    def coerce(cls, spec: "StreamSpec | Mapping[str, Any]") -> "StreamSpec":
        """Accept either a StreamSpec (returned as is) or a mapping (validated through ``from_dict``)."""
        return spec if isinstance(spec, StreamSpec) else cls.from_dict(spec)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict, for the resolved recipe and results.json."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

