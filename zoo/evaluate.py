"""Evaluating registry experts (one model, or a set of them as a zoo) on a recipe's task stream.

The experts form a :class:`zoo.ensemble.ZooEnsemble`: each card maps its heads to global task ids, and a
task is predicted by averaging the softmax probabilities of the experts that know it.
"""

from __future__ import annotations

from typing import Any, Sequence

from registry import Expert
from registry.errors import ZooError, first_line

from .ensemble import ZooEnsemble
from .metrics import evaluate_stage


def ensemble_on_stream(experts: Sequence[Expert], recipe: Any, device: str | None = None) -> tuple[Any, ZooEnsemble]:
    """The recipe's task stream (on the device) and the experts as a zoo ensemble over its classes."""
    from .data import build_stream
    from .train import resolve_device

    dev = resolve_device(device or recipe.device)
    stream = build_stream(recipe.stream).to(dev)
    ensemble = ZooEnsemble.from_experts(experts, stream.num_classes, dev)
    _check_inputs(experts, ensemble, stream)
    return stream, ensemble


def _check_inputs(experts: Sequence[Expert], ensemble: ZooEnsemble, stream: Any) -> None:
    """One sample through every member first, so that an expert built for other inputs is one clear error
    naming it, not a shape error deep inside a matrix product."""
    import torch

    x = stream.tasks[0].test.x[:1]
    with torch.no_grad():
        for expert, member in zip(experts, ensemble.members):
            try:
                member.model.eval()(x)
            except RuntimeError as e:
                raise ZooError(f"expert {expert.name} ({expert.id}) cannot take the recipe's inputs of shape "
                               f"{tuple(x.shape[1:])}: {first_line(e)}") from None


def evaluate_experts(experts: Sequence[Expert], recipe: Any, device: str | None = None) -> dict[str, Any]:
    """Per-task class-IL and task-IL test accuracy of one expert or a zoo of them on ``recipe``'s stream.

    Class-IL is scored over the classes of every task the experts know.
    """
    stream, ensemble = ensemble_on_stream(experts, recipe, device)
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
