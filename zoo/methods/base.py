"""The method interface every continual-learning method implements, and the registry of method names.

A method is run stage by stage by :func:`zoo.runner.run_recipe`: ``train_stage(t)`` learns task ``t``,
``predictor()`` answers for evaluation, ``state()`` / ``load_state()`` checkpoint it between stages (so an
interrupted run resumes at the last finished stage), and ``expert()`` is what goes to the registry.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..data import TaskStream
from ..metrics import Predictor
from ..train import TrainConfig

_METHODS: dict[str, type["Method"]] = {}


def register_method(name: str) -> Callable[[type["Method"]], type["Method"]]:
    """Class decorator: make a method available to recipes as ``method: NAME``."""
    def wrap(cls: type["Method"]) -> type["Method"]:
        cls.name = name
        _METHODS[name] = cls
        return cls
    return wrap


def get_method(name: str) -> type["Method"]:
    """The method class registered under ``name``; a clear error otherwise."""
    from ..schema import RecipeError

    if name not in _METHODS:
        raise RecipeError(f"recipe: unknown method {name!r} (choose from {', '.join(sorted(_METHODS))})")
    return _METHODS[name]


def list_methods() -> list[str]:
    """Names of the registered methods."""
    return sorted(_METHODS)


def test_metrics(stage: dict[str, Any], t: int) -> dict[str, float]:
    """A stage's card metrics, named for their split: mean test accuracy over the tasks seen up to ``t``
    under each protocol (``test_class_il_accuracy``, ``test_task_il_accuracy``)."""
    return {f"test_{p}_accuracy": sum(stage[p][: t + 1]) / (t + 1) for p in ("class_il", "task_il")}


@dataclass
class RunContext:
    """What a method needs from the run: the stream, a model factory, training settings, device, seed."""

    stream: TaskStream
    new_model: Callable[[], nn.Module]
    training: TrainConfig
    device: torch.device
    seed: int
    progress: bool = True
    architecture: str = ""
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    shared: dict[Any, Any] = dataclasses.field(default_factory=dict)
    """Shared by every method of one run: work two methods would repeat identically (e.g. the Ex-Model
    experts, which every source distils from) is done once and kept here."""
    new_model_at: Callable[[int], nn.Module] | None = None
    """A fresh model of task ``t``'s architecture (recipes with an architecture stream; None: ``new_model``)."""
    architecture_at: Callable[[int], str] | None = None

    def model_for(self, t: int) -> nn.Module:
        """A fresh model of the architecture task ``t`` uses."""
        return self.new_model_at(t) if self.new_model_at is not None else self.new_model()

    def arch_key(self, t: int) -> str:
        """The name of task ``t``'s architecture (one name for the whole run without a stream)."""
        return self.architecture_at(t) if self.architecture_at is not None else self.architecture


@dataclass
class NoParams:
    """A method without parameters."""


class Method(ABC):
    """A continual-learning method (see module docstring). Subclasses set ``Params`` to a dataclass."""

    name: str = "method"
    Params: type = NoParams
    changes_architecture: bool = False  # True: the method accepts a recipe whose architecture changes per task
    memory_param: str | None = None
    stage_role: str = "snapshot"
    """What the model of each stage is for the registry: a ``snapshot`` of the method (a run pushes only the
    final one by default) or an ``expert`` in its own right (Model Zoo's members: always pushed)."""
    """The parameter that sizes the method's exemplar memory; a recipe's ``budget:`` derives it from the
    method's own model cost (None: the budget does not apply, the memory is reported as measured)."""

    def __init__(self, params: Any, ctx: RunContext):
        self.params = params
        self.ctx = ctx

    @abstractmethod
    def train_stage(self, t: int) -> dict[str, Any]:
        """Learn task ``t`` (tasks 0..t-1 already learnt); return facts worth logging (epochs, val acc)."""

    @abstractmethod
    def predictor(self) -> Predictor:
        """Scores over all global classes for evaluation (see :data:`zoo.metrics.Predictor`)."""

    @abstractmethod
    def state(self) -> dict[str, torch.Tensor]:
        """Every tensor needed to resume after the current stage."""

    @abstractmethod
    def load_state(self, tensors: dict[str, torch.Tensor], t: int) -> None:
        """Restore the state saved after stage ``t``."""

    @abstractmethod
    def expert(self) -> nn.Module:
        """The model that represents the method after the current stage (pushed to the registry)."""

    @classmethod
    def budget_models(cls, architecture: str, model_args: dict[str, Any], num_classes: int, tasks: int,
                      params: Any) -> list[nn.Module]:
        """The models the method holds after ``tasks`` tasks (what a memory budget charges it for): one model
        of the recipe's architecture, unless the method says otherwise."""
        from ..models import create_model

        return [create_model(architecture, num_classes, **model_args)]

    def learned_at(self, t: int) -> int:
        """The stage at which task ``t`` is learnt (forgetting and BWT count from there): its own stage,
        unless the method defers learning (BMC learns a batch of tasks when the batch ends)."""
        return t

    def memory(self) -> dict[str, Any]:
        """What the method keeps besides its models: ``exemplars`` (count), the ``bytes`` they take as held,
        and ``all_data: True`` for a method that keeps every training sample."""
        return {"exemplars": 0, "bytes": 0}

    def models(self) -> list[nn.Module]:
        """Every model the method keeps (memory accounting counts them all)."""
        return [self.expert()]

    def meta(self) -> dict[str, Any]:
        """JSON-ready state beside the tensors of :meth:`state` (e.g. a scheduler's weights)."""
        return {}

    def load_meta(self, meta: dict[str, Any]) -> None:
        """Restore :meth:`meta`'s output."""

    def publish(self, t: int, publish: Callable[..., Any], parent: Any, stage: dict[str, Any]) -> Any:
        """Push what stage ``t`` produced through ``publish(model, suffix=..., tasks=..., parents=..., ...)``
        and return the card of the model that stands for the method now (None when nothing was pushed).
        By default: the stage's model, with the previous stage's model as parent."""
        seen = self.ctx.stream.tasks[: t + 1]
        return publish(self.expert(), suffix=f"s{t}", tasks=[(k.id, k.classes) for k in seen],
                       parents=[parent] if parent else [], metrics=test_metrics(stage, t), role=self.stage_role)

    def close(self) -> None:
        """Release what the method holds beyond the run (worker pools, clusters)."""

    def hyperparameters(self) -> dict[str, Any]:
        """The method's parameters as recorded in expert cards and results."""
        return dataclasses.asdict(self.params) if dataclasses.is_dataclass(self.params) else {}


class SingleModelMethod(Method):
    """A method that carries one model, ``self.model``, from stage to stage: it answers for evaluation, is
    what the registry gets, and is the checkpoint (``model.*`` tensors)."""

    def __init__(self, params: Any, ctx: RunContext):
        super().__init__(params, ctx)
        self.model = self.initial_model()

    def initial_model(self) -> nn.Module:
        """The model the method starts from: a fresh one of the recipe's architecture, unless it says otherwise."""
        return self.ctx.new_model()

    def predictor(self) -> Predictor:
        self.model.eval()
        return lambda x, task: self.model(x)

    def expert(self) -> nn.Module:
        return self.model

    def state(self) -> dict[str, torch.Tensor]:
        return {f"model.{k}": v for k, v in self.model.state_dict().items()}

    def load_state(self, tensors: dict[str, torch.Tensor], t: int) -> None:
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
