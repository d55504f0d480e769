"""Ex-Model continual learning (Carta, Cossu, Lomonaco, Bacciu, CLVision 2022): a student from a stream of
experts, without their data.

For each task an expert is trained on that task alone, every expert from one shared initialisation (as
the reference does), and published. The student f_i is then built from f_{i-1} and e_i only, on synthetic
data from one source (:mod:`zoo.synthetic`: ``noise``, ``aux``, ``inversion``, or ``replay``, the upper
bound that breaks the setting), by :func:`zoo.distill.distill_expert`: the target rule, MSE + CE (or KD), a
fixed buffer of B samples split B/i over the experts with old samples relabelled by f_{i-1}, a fixed
number of SGD iterations per expert, the student carried forward.

``last_expert`` is the reference point the student must beat: the newest expert alone.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ..distill import DistillConfig, Share, distill_expert
from ..schema import bounded
from ..synthetic import (AuxSource, InversionConfig, InversionSource, NoiseSource, ReplaySource, Source,
                         fit_inputs)
from ..train import fit
from .base import NoParams, SingleModelMethod, register_method, test_metrics


@dataclass
class ExModelParams:
    """Ex-Model's parameters (ALGORITHMS.md §3); ``aux`` names the auxiliary data set as a stream spec
    (e.g. ``{dataset: digits}``), its inputs resized to the stream's."""

    source: Literal["noise", "aux", "inversion", "replay"] = "inversion"
    buffer_size: int = bounded(5000, ge=1)
    distill: DistillConfig = field(default_factory=DistillConfig)
    inversion: InversionConfig = field(default_factory=InversionConfig)
    aux: dict[str, Any] | None = None


def shared_init(ctx: Any) -> dict[str, torch.Tensor]:
    """The one initialisation every expert (and the first student) of a run starts from."""
    key = ("exmodel-init", ctx.seed)
    if key not in ctx.shared:
        torch.manual_seed(ctx.seed)
        ctx.shared[key] = copy.deepcopy(ctx.new_model().state_dict())
    return ctx.shared[key]


def task_expert(ctx: Any, t: int) -> tuple[nn.Module, dict[str, Any]]:
    """The expert of task ``t``: trained on that task alone from the shared initialisation. Kept in the run's
    shared store, so that every source of a recipe distils from the same experts (trained once)."""
    key = ("exmodel-expert", t, ctx.seed, repr(ctx.training))
    if key not in ctx.shared:
        task = ctx.stream.tasks[t]
        expert = ctx.new_model()
        expert.load_state_dict(shared_init(ctx))
        r = fit(expert, task.train, task.val, ctx.training, num_classes=ctx.stream.num_classes, classes=task.classes,
                generator=torch.Generator().manual_seed(ctx.seed * 1000 + t), desc=f"expert task {t}",
                progress=ctx.progress)
        ctx.shared[key] = (expert.eval(), {"epochs": r.epochs_run, "val_accuracy": r.val_accuracy})
    return ctx.shared[key]


def make_source(params: ExModelParams, ctx: Any) -> Source:
    """The synthetic data source the parameters name, for the run's stream and device."""
    shape, device = tuple(ctx.stream.input_shape), ctx.device
    if params.source == "noise":
        return NoiseSource(shape, device)
    if params.source == "inversion":
        return InversionSource(shape, params.inversion, device)
    if params.source == "replay":
        return ReplaySource(ctx.stream, shape, device)
    if params.aux is None:
        from ..schema import RecipeError

        raise RecipeError("recipe: exmodel source 'aux' needs 'aux: {dataset: ...}' (the auxiliary data set)")
    from ..data import build_stream

    aux = build_stream(params.aux)
    inputs = torch.cat([t.train.x for t in aux.tasks])
    return AuxSource(fit_inputs(inputs, shape), device)


class _Experts(SingleModelMethod):
    """Shared parts: the expert of each stage, publishing it, and the model that answers for the method
    (starting from the shared initialisation)."""

    def __init__(self, params: Any, ctx: Any):
        super().__init__(params, ctx)
        self.model.load_state_dict(shared_init(ctx))
        self.current: tuple[int, nn.Module, dict[str, Any]] | None = None

    def _publish_expert(self, t: int, publish: Any) -> Any:
        from registry.card import ParentRef

        if self.current is None or self.current[0] != t:
            return None
        _, expert, info = self.current
        task = self.ctx.stream.tasks[t]
        card = publish(expert, suffix=f"expert-t{task.id}", tasks=[(task.id, task.classes)], parents=[],
                       metrics={"val_accuracy": info["val_accuracy"]},
                       hyperparameters={"input_shape": list(self.ctx.stream.input_shape)}, role="expert")
        return ParentRef(card.id, card.digest, "expert") if card is not None else None


@register_method("exmodel")
class ExModel(_Experts):
    """Ex-Model distillation (see module docstring)."""

    Params = ExModelParams

    def __init__(self, params: ExModelParams, ctx: Any):
        super().__init__(params, ctx)
        self.source = make_source(params, ctx)
        self.shares: list[Share] = []

    def train_stage(self, t: int) -> dict[str, Any]:
        expert, expert_info = task_expert(self.ctx, t)
        self.current = (t, expert, expert_info)
        stream = self.ctx.stream
        seen_before = stream.seen_classes(t - 1) if t > 0 else []
        self.shares, info = distill_expert(
            self.model, expert, stream.tasks[t].classes, seen_before, self.shares, self.source,
            self.params.buffer_size, self.params.distill, stream.num_classes,
            torch.Generator().manual_seed(self.ctx.seed * 1000 + t), progress=self.ctx.progress)
        return {"expert": expert_info, **info, **({"breaks_setting": True} if self.source.breaks_setting else {})}

    def publish(self, t: int, publish: Any, parent: Any, stage: dict[str, Any]) -> Any:
        """The task's expert (from the shared initialisation, no parent), then the student with parents: the
        previous student and the expert."""
        expert_ref = self._publish_expert(t, publish)
        seen = self.ctx.stream.tasks[: t + 1]
        hyper = {"distill": asdict(self.params.distill), "source": self.params.source,
                 "input_shape": list(self.ctx.stream.input_shape)}
        if self.params.source == "inversion":
            hyper["inversion"] = asdict(self.params.inversion)
        return publish(self.model, suffix=f"student-s{t}", tasks=[(k.id, k.classes) for k in seen],
                       parents=([parent] if parent else []) + ([expert_ref] if expert_ref else []),
                       metrics=test_metrics(stage, t), hyperparameters=hyper)

    def memory(self) -> dict[str, Any]:
        n = sum(len(s.y) for s in self.shares)
        return {"exemplars": n, "bytes": sum(s.x.element_size() * s.x.numel() for s in self.shares)}

    def state(self) -> dict[str, torch.Tensor]:
        out = super().state()
        for i, s in enumerate(self.shares):
            out[f"share.{i}.x"], out[f"share.{i}.y"] = s.x, s.y
        return out

    def load_state(self, tensors: dict[str, torch.Tensor], t: int) -> None:
        super().load_state(tensors, t)
        count = len({k.split(".")[1] for k in tensors if k.startswith("share.")})
        self.shares = [Share(tensors[f"share.{i}.x"].to(self.ctx.device), tensors[f"share.{i}.y"].to(self.ctx.device))
                       for i in range(count)]


@register_method("last_expert")
class LastExpert(_Experts):
    """The newest expert alone (trained on its task from the shared initialisation): the reference point a
    data-free student has to beat."""

    Params = NoParams

    def train_stage(self, t: int) -> dict[str, Any]:
        expert, info = task_expert(self.ctx, t)
        self.current = (t, expert, info)
        self.model.load_state_dict(expert.state_dict())
        return dict(info)

    def publish(self, t: int, publish: Any, parent: Any, stage: dict[str, Any]) -> Any:
        """Nothing new: the expert is the one :class:`ExModel` publishes under its own name."""
        return None
