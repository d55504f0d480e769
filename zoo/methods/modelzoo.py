"""Model Zoo (Ramesh & Chaudhari, ICLR 2022) as a continual-learning method, and its two reference points.

Each round (one per new task) the boosting scheduler (:mod:`zoo.schedule`) picks a group: the new task plus
up to k−1 past tasks by weight. A **fresh** multi-head model (shared backbone, one linear head per task of
the group) is trained on the union of the group's data and joins the zoo. The zoo predicts task t by
averaging the softmax probabilities of every member with a head for t (:mod:`zoo.ensemble`); its NLL per
seen task reweights the scheduler. With ``replay_frac`` f, each past task keeps one fixed, seeded subset of
⌊f·N⌋ samples per class (the same every round), repeated max(1, ⌊1/((g−1)f)⌋) times in a group of g tasks,
and the first model that saw a task weighs 1/f in the ensemble.

``isolated`` is the zoo with k = 1 (one model per task, same budget per model); ``multihead`` trains one
multi-head model on all tasks seen so far (a fresh one per stage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..data import Split
from ..ensemble import Member, ZooEnsemble, nll_per_task
from .base import Method, NoParams, register_method
from ..metrics import Predictor
from ..models import create_model
from ..schema import bounded
from ..schedule import BoostingConfig, BoostingScheduler
from ..train import fit, prepare_model


@dataclass
class ModelZooParams:
    """Model Zoo's parameters (ALGORITHMS.md §1)."""

    k: int = bounded(5, ge=1)
    round_size: Literal["paper", "mzc"] = "paper"
    normalize: Literal["seen", "all"] = "seen"
    loss_source: Literal["train", "val"] = "train"
    replay_frac: float | None = bounded(None, gt=0, le=1)


def replay_subset(split: Split, classes: list[int], replay_frac: float, seed: int, task_id: int) -> torch.Tensor:
    """The indices an old task keeps under limited replay: ⌊f·N_c⌋ samples of each class c, drawn once from a
    generator seeded by (seed, task) so that every round reuses the same subset (ALGORITHMS.md §1)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + task_id)
    keep = []
    for c in classes:
        idx = torch.nonzero(split.y == c).flatten()
        n = math.floor(replay_frac * len(idx) + 1e-9)
        keep.append(idx[torch.randperm(len(idx), generator=gen)[:n].to(idx.device)])
    return torch.cat(keep)


def replay_copies(group_size: int, replay_frac: float) -> int:
    """How often a kept old sample is repeated: max(1, ⌊1/((g−1)·f)⌋) for a group of g tasks, so the old
    tasks together weigh about as much as the new one."""
    return max(1, math.floor(1 / (max(group_size - 1, 1) * replay_frac) + 1e-9))


def group_data(stream: Any, group: list[int], split: str, replay_frac: float | None, seed: int,
               new_task: int | None) -> tuple[Split, torch.Tensor]:
    """The union of a group's data with targets as output columns of a multi-head model (head g after head
    g-1), and the head id of every column. Under limited replay the past tasks' training data is cut to
    their fixed subsets (:func:`replay_subset`) and repeated :func:`replay_copies` times."""
    xs, ys, heads = [], [], []
    offset = 0
    for g, task_id in enumerate(group):
        task = stream.tasks[task_id]
        s: Split = getattr(task, split)
        local = torch.full((stream.num_classes,), -1, dtype=torch.long, device=s.y.device)
        local[torch.as_tensor(task.classes, device=s.y.device)] = torch.arange(len(task.classes), device=s.y.device)
        x, y = s.x, local[s.y] + offset
        if replay_frac is not None and task_id != new_task and split == "train":
            idx = replay_subset(s, task.classes, replay_frac, seed, task_id)
            copies = replay_copies(len(group), replay_frac)
            x, y = x[idx].repeat(copies, *([1] * (x.dim() - 1))), y[idx].repeat(copies)
        xs.append(x)
        ys.append(y)
        heads.append(torch.full((len(task.classes),), g, dtype=torch.long))
        offset += len(task.classes)
    head_of_column = torch.cat(heads).to(xs[0].device)
    return Split(torch.cat(xs), torch.cat(ys)), head_of_column


class _ZooBase(Method):
    """Shared machinery: members, the ensemble predictor, checkpoints and publishing."""

    stage_role = "expert"  # every round's model is a member of the zoo, pushed whatever the push mode

    def __init__(self, params: Any, ctx: Any):
        super().__init__(params, ctx)
        self.members: list[tuple[nn.Module, list[int]]] = []

    def _new_member(self, group: list[int]) -> nn.Module:
        heads = [len(self.ctx.stream.tasks[t].classes) for t in group]
        model = create_model(self.ctx.architecture, sum(heads), heads=heads, **self.ctx.model_args)
        return prepare_model(model, self.ctx.device)

    def _train_member(self, group: list[int], new_task: int | None, t: int,
                      replay_frac: float | None) -> tuple[nn.Module, dict[str, Any]]:
        gen = torch.Generator().manual_seed(self.ctx.seed * 1000 + t)
        torch.manual_seed(self.ctx.seed * 1000 + t)
        model = self._new_member(group)
        train, heads = group_data(self.ctx.stream, group, "train", replay_frac, self.ctx.seed, new_task)
        val, _ = group_data(self.ctx.stream, group, "val", None, self.ctx.seed, new_task)
        r = fit(model, train, val, self.ctx.training, num_classes=len(heads), heads=heads, generator=gen,
                desc=f"{self.name} round {t} tasks {group}", progress=self.ctx.progress)
        return model, {"group": group, "epochs": r.epochs_run, "val_accuracy": r.val_accuracy,
                       "samples": len(train)}

    def ensemble(self) -> ZooEnsemble:
        """The zoo as a predictor over global classes."""
        first_seen: dict[int, int] = {}
        for i, (_, group) in enumerate(self.members):
            for task_id in group:
                first_seen.setdefault(task_id, i)
        f = getattr(self.params, "replay_frac", None)
        members = []
        for i, (model, group) in enumerate(self.members):
            tasks = [(t, list(self.ctx.stream.tasks[t].classes)) for t in group]
            weights = {t: (1.0 / f if f and first_seen[t] == i else 1.0) for t in group}
            members.append(Member(model, tasks, True, weights))
        return ZooEnsemble(members, self.ctx.stream.num_classes)

    def predictor(self) -> Predictor:
        return self.ensemble()

    def expert(self) -> nn.Module:
        return self.members[-1][0]

    def models(self) -> list[nn.Module]:
        return [m for m, _ in self.members]

    def state(self) -> dict[str, torch.Tensor]:
        return {f"member.{i}.{k}": v for i, (m, _) in enumerate(self.members) for k, v in m.state_dict().items()}

    def meta(self) -> dict[str, Any]:
        return {"groups": [g for _, g in self.members]}

    def load_meta(self, meta: dict[str, Any]) -> None:
        self._groups = [list(g) for g in meta.get("groups", [])]

    def load_state(self, tensors: dict[str, torch.Tensor], t: int) -> None:
        self.members = []
        for i, group in enumerate(self._groups):
            model = self._new_member(group)
            prefix = f"member.{i}."
            model.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            self.members.append((model.eval(), group))

    def publish(self, t: int, publish: Any, parent: Any, stage: dict[str, Any]) -> Any:
        """The round's new multi-head model, its heads mapped to the group's global task ids (no parent: every
        round model is trained from scratch)."""
        model, group = self.members[-1]
        return publish(model, suffix=f"r{t}", tasks=[(g, self.ctx.stream.tasks[g].classes) for g in group],
                       parents=[], metrics={"val_accuracy": stage["info"].get("val_accuracy", float("nan"))},
                       role=self.stage_role)


@register_method("modelzoo")
class ModelZoo(_ZooBase):
    """The continual Model Zoo with the boosting scheduler."""

    Params = ModelZooParams

    def __init__(self, params: ModelZooParams, ctx: Any):
        super().__init__(params, ctx)
        stream = ctx.stream
        cfg = BoostingConfig(k=params.k, round_size=params.round_size, normalize=params.normalize,
                             loss_source=params.loss_source)
        self.scheduler = BoostingScheduler([t.id for t in stream.tasks], cfg, seed=ctx.seed,
                                           num_classes={t.id: len(t.classes) for t in stream.tasks})

    def train_stage(self, t: int) -> dict[str, Any]:
        group = self.scheduler.next_round(new_task=t)[0]
        model, info = self._train_member(group, t, t, self.params.replay_frac)
        self.members.append((model, group))
        split = self.params.loss_source
        losses = nll_per_task(self.ensemble(), {s: getattr(self.ctx.stream.tasks[s], split)
                                                for s in self.scheduler.seen})
        weights = self.scheduler.update(losses)
        return {**info, "group": list(group), "losses": {str(k): v for k, v in losses.items()},
                "weights": {str(k): weights[k] for k in self.scheduler.seen}}

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "scheduler": self.scheduler.state_dict()}

    def load_meta(self, meta: dict[str, Any]) -> None:
        super().load_meta(meta)
        if "scheduler" in meta:
            self.scheduler.load_state_dict(meta["scheduler"])


@register_method("isolated")
class Isolated(_ZooBase):
    """One model per task, trained on that task alone (Model Zoo with k = 1): the isolated reference."""

    Params = NoParams

    def train_stage(self, t: int) -> dict[str, Any]:
        model, info = self._train_member([t], t, t, None)
        self.members.append((model, [t]))
        return info


@register_method("multihead")
class MultiHead(_ZooBase):
    """One multi-head model trained on all tasks seen so far (a fresh one per stage)."""

    Params = NoParams

    def train_stage(self, t: int) -> dict[str, Any]:
        group = list(range(t + 1))
        model, info = self._train_member(group, None, t, None)
        self.members = [(model, group)]
        return info
