"""Continual-learning evaluation: accuracy matrices, their summary metrics, results.json and the heatmap.

Definitions follow ALGORITHMS.md §0, with R[i][j] the test accuracy on task j after training stage i
(0-based here; the formulas below are the 1-based ones of the spec, translated):

- final average accuracy  A_T = mean_{j<=T} R[T][j]
- average incremental accuracy = mean_i A_i, with A_i = mean_{j<=i} R[i][j]
- forgetting = mean_{j<T} max_{i<T} (R[i][j] - R[T][j])
- BWT = mean_{j<T} (R[T][j] - R[j][j])
- FWT = mean_{j>=2} (R[j-1][j] - b_j), b_j the accuracy of a freshly initialised model on task j

Two protocols are always reported: class-IL (argmax over the classes seen so far, the logits of unseen
classes masked out) and task-IL (argmax over the task's own classes, the task id given).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

PROTOCOLS = ("class_il", "task_il")


# --- summary metrics of a (T x T) accuracy matrix -----------------------------------------------------------

def _check(matrix: Sequence[Sequence[float]]) -> int:
    t = len(matrix)
    if t == 0 or any(len(row) != t for row in matrix):
        raise ValueError("accuracy matrix must be square and non-empty")
    return t


def final_average_accuracy(matrix: Sequence[Sequence[float]]) -> float:
    """A_T: mean accuracy over all tasks after the last stage."""
    t = _check(matrix)
    return sum(matrix[t - 1]) / t


def average_incremental_accuracy(matrix: Sequence[Sequence[float]]) -> float:
    """Mean over stages i of A_i, the mean accuracy on tasks 0..i after stage i."""
    t = _check(matrix)
    return sum(sum(matrix[i][: i + 1]) / (i + 1) for i in range(t)) / t


def forgetting(matrix: Sequence[Sequence[float]]) -> float:
    """mean_{j<T} max_{i<T} (R[i][j] - R[T][j]); 0 for a single task."""
    t = _check(matrix)
    if t == 1:
        return 0.0
    last = matrix[t - 1]
    return sum(max(matrix[i][j] for i in range(t - 1)) - last[j] for j in range(t - 1)) / (t - 1)


def backward_transfer(matrix: Sequence[Sequence[float]]) -> float:
    """BWT = mean_{j<T} (R[T][j] - R[j][j]); negative when old tasks are forgotten."""
    t = _check(matrix)
    if t == 1:
        return 0.0
    return sum(matrix[t - 1][j] - matrix[j][j] for j in range(t - 1)) / (t - 1)


def forward_transfer(matrix: Sequence[Sequence[float]], baseline: Sequence[float]) -> float:
    """FWT = mean_{j>=1} (R[j-1][j] - b_j) (0-based j), with b_j a fresh model's accuracy on task j."""
    t = _check(matrix)
    if len(baseline) != t:
        raise ValueError(f"baseline has {len(baseline)} entries for {t} tasks")
    if t == 1:
        return 0.0
    return sum(matrix[j - 1][j] - baseline[j] for j in range(1, t)) / (t - 1)


def summarize(matrix: Sequence[Sequence[float]], baseline: Sequence[float]) -> dict[str, float]:
    """All summary metrics of one protocol's matrix."""
    return {
        "final_average_accuracy": final_average_accuracy(matrix),
        "average_incremental_accuracy": average_incremental_accuracy(matrix),
        "forgetting": forgetting(matrix),
        "bwt": backward_transfer(matrix),
        "fwt": forward_transfer(matrix, baseline),
    }


# --- evaluating a predictor on a task stream ------------------------------------------------------------------

Predictor = Callable[[torch.Tensor, Any], torch.Tensor]
"""``predict(x, task)`` returns scores over all global classes (N, C); ``task`` is the Task when its id is
given (task-IL) and ``None`` otherwise (class-IL). Scores may be logits or probabilities. A predictor whose
answer depends on the task sets the attribute ``uses_task = True``; others are called once per batch."""


@torch.no_grad()
def task_accuracies(predict: Predictor, task: Any, seen_classes: Sequence[int], num_classes: int,
                    batch_size: int = 1024) -> dict[str, float]:
    """Class-IL and task-IL test accuracy of ``predict`` on one task."""
    from .train import class_mask

    x, y = task.test.x, task.test.y
    seen = class_mask(seen_classes, num_classes, x.device)
    own = class_mask(task.classes, num_classes, x.device)
    correct = {"class_il": 0, "task_il": 0}
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        scores = predict(xb, None).float()
        correct["class_il"] += int((scores.masked_fill(~seen, -math.inf).argmax(1) == yb).sum())
        if getattr(predict, "uses_task", False):  # multi-head predictors answer differently given the task
            scores = predict(xb, task).float()
        correct["task_il"] += int((scores.masked_fill(~own, -math.inf).argmax(1) == yb).sum())
    n = max(len(y), 1)
    return {p: correct[p] / n for p in PROTOCOLS}


def evaluate_stage(predict: Predictor, stream: Any, seen_classes: Sequence[int]) -> dict[str, list[float]]:
    """One row of each accuracy matrix: every task of the stream (past and future) after a stage."""
    rows: dict[str, list[float]] = {p: [] for p in PROTOCOLS}
    for task in stream.tasks:
        accs = task_accuracies(predict, task, seen_classes, stream.num_classes)
        for p in PROTOCOLS:
            rows[p].append(accs[p])
    return rows


def results_from_rows(rows: dict[str, list[list[float]]], baseline: dict[str, list[float]]) -> dict[str, Any]:
    """results.json's metric block from the stage rows of each protocol and the fresh-model baseline."""
    out: dict[str, Any] = {"accuracy_matrix": {p: rows[p] for p in PROTOCOLS}, "baseline_accuracy": baseline}
    for name in ("final_average_accuracy", "average_incremental_accuracy", "forgetting", "bwt", "fwt"):
        out[name] = {}
    for p in PROTOCOLS:
        for name, value in summarize(rows[p], baseline[p]).items():
            out[name][p] = value
    return out


# --- the heatmap ----------------------------------------------------------------------------------------------

def plot_accuracy_matrix(results: dict[str, Any], path: Any, title: str = "") -> None:
    """Save a PNG with one heatmap per protocol (rows: after stage i, columns: task j)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mats = results["accuracy_matrix"]
    t = len(mats["class_il"])
    fig, axes = plt.subplots(1, 2, figsize=(4 + 0.9 * t, 2 + 0.45 * t), squeeze=False)
    for ax, protocol in zip(axes[0], PROTOCOLS):
        im = ax.imshow(mats[protocol], vmin=0, vmax=1, cmap="viridis")
        label = "class-IL" if protocol == "class_il" else "task-IL"
        avg = results["final_average_accuracy"][protocol]
        ax.set_title(f"{label} (final avg {avg:.3f})", fontsize=10)
        ax.set_xlabel("evaluated on task j")
        ax.set_ylabel("after training stage i")
        ax.set_xticks(range(t))
        ax.set_yticks(range(t))
        if t <= 12:
            for i in range(t):
                for j in range(t):
                    v = mats[protocol][i][j]
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if v > 0.6 else "white")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
