"""Evaluating registry experts (one model, or a set of them as a zoo) on a recipe's task stream.

Each expert's card maps its heads to global task ids. A single-head expert scores the classes of every task
on its card with one softmax; a multi-head expert scores task ``t``'s classes with head ``t``'s softmax. A
set of experts predicts task ``t`` by averaging the softmax probabilities of the experts that know ``t``
(Model Zoo's rule: probabilities, not logits).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from registry import Expert

from .metrics import evaluate_stage


class ExpertEnsemble:
    """Scores over global classes from one or more experts (see module docstring); usable as a Predictor."""

    uses_task = False

    def __init__(self, experts: Sequence[Expert], num_classes: int, device: torch.device,
                 weights: Sequence[float] | None = None):
        self.num_classes = num_classes
        self.members = []
        for i, expert in enumerate(experts):
            config = expert.config()
            tasks = expert.card.tasks
            if config.heads is not None and len(config.heads) != len(tasks):
                raise ValueError(f"expert {expert.id}: {len(config.heads)} heads but {len(tasks)} tasks on its card")
            if any(c >= num_classes for t in tasks for c in t.classes):
                raise ValueError(f"expert {expert.id} knows classes beyond the stream's {num_classes}")
            model = expert.model(device)
            self.members.append((model, config.heads is not None, tasks, 1.0 if weights is None else float(weights[i])))

    def task_ids(self) -> set[int]:
        """Global ids of the tasks some member knows."""
        return {t.id for _, _, tasks, _ in self.members for t in tasks}

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, task: Any = None) -> torch.Tensor:
        total = torch.zeros(len(x), self.num_classes, device=x.device)
        weight = torch.zeros(self.num_classes, device=x.device)
        for model, multi_head, tasks, w in self.members:
            if multi_head:
                outs = [model(x, head=i).float().softmax(1) for i in range(len(tasks))]
                for probs, spec in zip(outs, tasks):
                    idx = torch.tensor(spec.classes, device=x.device)
                    total[:, idx] += w * probs
                    weight[idx] += w
            else:
                known = sorted({c for spec in tasks for c in spec.classes})
                idx = torch.tensor(known, device=x.device)
                total[:, idx] += w * model(x).float()[:, idx].softmax(1)
                weight[idx] += w
        # Classes no member knows score -1 (below any probability), never winning an argmax they can avoid.
        return torch.where(weight > 0, total / weight.clamp_min(1e-12), torch.full_like(total, -1.0))


def evaluate_experts(experts: Sequence[Expert], recipe: Any, device: str | None = None) -> dict[str, Any]:
    """Per-task class-IL and task-IL test accuracy of one expert or a zoo of them on ``recipe``'s stream.

    Class-IL is scored over the classes of every task the experts know.
    """
    from .data import build_stream
    from .train import resolve_device

    dev = resolve_device(device or recipe.device)
    stream = build_stream(recipe.stream).to(dev)
    ensemble = ExpertEnsemble(experts, stream.num_classes, dev)
    known = ensemble.task_ids()
    seen = sorted({c for task in stream.tasks if task.id in known for c in task.classes})
    if not seen:
        raise ValueError("the experts know none of the stream's tasks")
    row = evaluate_stage(ensemble, stream, seen)
    tasks = [{"task": task.id, "classes": list(task.classes), "known": task.id in known,
              "class_il": row["class_il"][j], "task_il": row["task_il"][j]} for j, task in enumerate(stream.tasks)]
    scored = [t for t in tasks if t["known"]]
    return {
        "experts": [e.id for e in experts],
        "stream": stream.name,
        "tasks": tasks,
        "average": {p: sum(t[p] for t in scored) / len(scored) for p in ("class_il", "task_il")},
    }
