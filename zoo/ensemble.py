"""The zoo ensemble: a predictor over global classes built from several models with task heads.

Every member maps its outputs to global tasks: a multi-head member has one head per task (head ``i`` covers
the classes of its ``i``-th task, as its expert card records), a single-head member scores all the classes of
its tasks with one softmax. For each task the ensemble **averages softmax probabilities** (not logits) over
the members that know the task, with per-member, per-task weights (Model Zoo gives the first model that saw
a task weight 1/replay_frac when replay is limited). Classes no member knows score -1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn


@dataclass
class Member:
    """One model of the ensemble: its task list (id, classes) in head order, and optional per-task weights."""

    model: nn.Module
    tasks: list[tuple[int, list[int]]]
    multi_head: bool
    weights: dict[int, float] = field(default_factory=dict)


class ZooEnsemble:
    """Averages members' per-task softmax probabilities into scores over all global classes (a Predictor)."""

    uses_task = False

    def __init__(self, members: Sequence[Member], num_classes: int):
        self.members = list(members)
        self.num_classes = num_classes

    @classmethod
    def from_experts(cls, experts: Sequence[Any], num_classes: int, device: torch.device,
                     weights: Sequence[float] | None = None) -> "ZooEnsemble":
        """An ensemble of registry experts; each card's task list gives the head → global task mapping."""
        members = []
        for i, expert in enumerate(experts):
            config = expert.config()
            tasks = [(t.id, list(t.classes)) for t in expert.card.tasks]
            if config.heads is not None and [len(c) for _, c in tasks] != list(config.heads):
                raise ValueError(f"expert {expert.id}: heads {config.heads} do not match the tasks on its card")
            if any(c >= num_classes for _, cs in tasks for c in cs):
                raise ValueError(f"expert {expert.id} knows classes beyond the stream's {num_classes}")
            w = 1.0 if weights is None else float(weights[i])
            members.append(Member(expert.model(device), tasks, config.heads is not None, {t: w for t, _ in tasks}))
        return cls(members, num_classes)

    def task_ids(self) -> set[int]:
        """Global ids of the tasks some member knows."""
        return {t for m in self.members for t, _ in m.tasks}

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, task: Any = None) -> torch.Tensor:
        total = torch.zeros(len(x), self.num_classes, device=x.device)
        weight = torch.zeros(self.num_classes, device=x.device)
        for m in self.members:
            m.model.eval()
            logits = m.model(x).float()
            if m.multi_head:
                start = 0
                for task_id, classes in m.tasks:
                    probs = logits[:, start:start + len(classes)].softmax(1)
                    start += len(classes)
                    self._add(total, weight, probs, classes, m.weights.get(task_id, 1.0))
            else:
                known = sorted({c for _, cs in m.tasks for c in cs})
                probs = logits[:, known].softmax(1)
                self._add(total, weight, probs, known, max((m.weights.get(t, 1.0) for t, _ in m.tasks), default=1.0))
        return torch.where(weight > 0, total / weight.clamp_min(1e-12), torch.full_like(total, -1.0))

    @staticmethod
    def _add(total: torch.Tensor, weight: torch.Tensor, probs: torch.Tensor, classes: Sequence[int], w: float) -> None:
        idx = torch.as_tensor(list(classes), device=total.device)
        total[:, idx] += w * probs
        weight[idx] += w


def nll_per_task(ensemble: ZooEnsemble, splits: dict[int, Any], batch_size: int = 2048) -> dict[int, float]:
    """Mean negative log-likelihood of the ensemble on each task's split (labels are global classes)."""
    out = {}
    for task_id, split in splits.items():
        total, n = 0.0, 0
        for i in range(0, len(split), batch_size):
            scores = ensemble(split.x[i:i + batch_size])
            p = scores.gather(1, split.y[i:i + batch_size, None]).clamp_min(1e-12)
            total += float(-p.log().sum())
            n += len(p)
        out[task_id] = total / max(n, 1)
    return out
