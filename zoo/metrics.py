"""Continual-learning evaluation: accuracy matrices, their summary metrics, results.json and the heatmap.

Definitions follow ALGORITHMS.md §0 with 0-based stages and tasks: R[i][j] is the test accuracy on task j after
training stage i, T the number of stages, and ``learned_at[j]`` the stage at which task j was learnt (j for
most methods; for BMC with K > 1 the stage where j's batch ended).

- final average accuracy  A = mean_j R[T-1][j]; its test-sample-weighted form (Avalanche's and PyCIL's
  convention) weighs task j by its number of test samples
- average incremental accuracy = mean_i A_i, with A_i = mean_{j<=i} R[i][j]
- forgetting (Chaudhry et al. 2018) = mean over tasks j with learned_at[j] < T-1 of
  max_{learned_at[j] <= l <= T-2} R[l][j] - R[T-1][j]; stages before a task was learnt never count
- BWT = mean over the same tasks of R[T-1][j] - R[learned_at[j]][j]
- FWT = mean_{j>=1} (R[j-1][j] - b_j), b_j the accuracy of a freshly initialised model on task j. Under
  class-IL with unseen classes masked, R[j-1][j] of a task that brings new classes is 0 by construction, so
  class-IL FWT is undefined there and reported as None (null in results.json)

Forgetting and BWT are None when no task was learnt before the last stage (a single stage, or one BMC batch).

Two protocols are always reported: class-IL (argmax over the classes seen so far, the logits of unseen
classes masked out) and task-IL (argmax over the task's own classes, the task id given).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

PROTOCOLS = ("class_il", "task_il")
Matrix = Sequence[Sequence[float]]


# --- summary metrics of a (T x T) accuracy matrix -----------------------------------------------------------

def _check(matrix: Matrix) -> int:
    t = len(matrix)
    if t == 0 or any(len(row) != t for row in matrix):
        raise ValueError("accuracy matrix must be square and non-empty")
    return t


def _learned(learned_at: Sequence[int] | None, t: int) -> list[int]:
    """``learned_at`` checked against a T-stage matrix (default: task j learnt at stage j)."""
    if learned_at is None:
        return list(range(t))
    out = [int(s) for s in learned_at]
    if len(out) != t:
        raise ValueError(f"learned_at has {len(out)} entries for {t} tasks")
    for j, s in enumerate(out):
        if not 0 <= s < t:
            raise ValueError(f"learned_at[{j}] = {s} is not a stage of a {t}-stage matrix")
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def final_average_accuracy(matrix: Matrix) -> float:
    """A_T: mean accuracy over all tasks after the last stage."""
    t = _check(matrix)
    return sum(matrix[t - 1]) / t


def final_weighted_accuracy(matrix: Matrix, test_sizes: Sequence[int]) -> float:
    """Accuracy over the pooled test samples of every task after the last stage (each task weighs by its
    number of test samples), as Avalanche's stream accuracy and PyCIL report it."""
    t = _check(matrix)
    if len(test_sizes) != t or sum(test_sizes) <= 0:
        raise ValueError(f"test_sizes must give {t} sample counts with a positive total")
    return sum(matrix[t - 1][j] * test_sizes[j] for j in range(t)) / sum(test_sizes)


def average_incremental_accuracy(matrix: Matrix) -> float:
    """Mean over stages i of A_i, the mean accuracy on tasks 0..i after stage i."""
    t = _check(matrix)
    return sum(sum(matrix[i][: i + 1]) / (i + 1) for i in range(t)) / t


def forgetting(matrix: Matrix, learned_at: Sequence[int] | None = None) -> float | None:
    """Chaudhry et al.'s forgetting: for each task learnt before the last stage, its best accuracy from the
    stage it was learnt up to the second-to-last stage, minus its final accuracy; the mean over those tasks
    (None when there is none)."""
    t = _check(matrix)
    la = _learned(learned_at, t)
    last = matrix[t - 1]
    return _mean([max(matrix[l][j] for l in range(la[j], t - 1)) - last[j] for j in range(t) if la[j] < t - 1])


def backward_transfer(matrix: Matrix, learned_at: Sequence[int] | None = None) -> float | None:
    """BWT = mean over tasks learnt before the last stage of R[T-1][j] - R[learned_at[j]][j]; negative when
    old tasks are forgotten (None when no task was learnt before the last stage)."""
    t = _check(matrix)
    la = _learned(learned_at, t)
    return _mean([matrix[t - 1][j] - matrix[la[j]][j] for j in range(t) if la[j] < t - 1])


def forward_transfer(matrix: Matrix, baseline: Sequence[float]) -> float | None:
    """FWT = mean_{j>=1} (R[j-1][j] - b_j) (0-based j), with b_j a fresh model's accuracy on task j (None for
    a single task)."""
    t = _check(matrix)
    if len(baseline) != t:
        raise ValueError(f"baseline has {len(baseline)} entries for {t} tasks")
    return _mean([matrix[j - 1][j] - baseline[j] for j in range(1, t)])


def summarize(matrix: Matrix, baseline: Sequence[float] | None, learned_at: Sequence[int] | None = None,
              test_sizes: Sequence[int] | None = None) -> dict[str, float | None]:
    """All summary metrics of one protocol's matrix; FWT is None without a ``baseline`` (undefined), the
    weighted accuracy None without ``test_sizes``."""
    return {
        "final_average_accuracy": final_average_accuracy(matrix),
        "final_weighted_accuracy": final_weighted_accuracy(matrix, test_sizes) if test_sizes else None,
        "average_incremental_accuracy": average_incremental_accuracy(matrix),
        "forgetting": forgetting(matrix, learned_at),
        "bwt": backward_transfer(matrix, learned_at),
        "fwt": forward_transfer(matrix, baseline) if baseline is not None else None,
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


def class_il_fwt_defined(stream: Any) -> bool:
    """Whether class-IL FWT means anything on ``stream``: only when no task after the first brings classes
    unseen before it (domain-incremental streams); otherwise masking makes R[j-1][j] = 0 by construction."""
    return all(set(stream.tasks[j].classes) <= set(stream.seen_classes(j - 1)) for j in range(1, len(stream.tasks)))


def results_from_rows(rows: dict[str, list[list[float]]], baseline: dict[str, list[float]],
                      learned_at: Sequence[int] | None = None, test_sizes: Sequence[int] | None = None,
                      fwt_protocols: Sequence[str] = PROTOCOLS) -> dict[str, Any]:
    """results.json's metric block from the stage rows of each protocol, the fresh-model baseline, the stage
    each task was learnt at and the tasks' test sizes. FWT is null for protocols not in ``fwt_protocols``."""
    t = len(rows[PROTOCOLS[0]])
    la = _learned(learned_at, t)
    out: dict[str, Any] = {"accuracy_matrix": {p: rows[p] for p in PROTOCOLS}, "learned_at": la,
                           "baseline_accuracy": baseline}
    if test_sizes is not None:
        out["test_sizes"] = list(test_sizes)
    for p in PROTOCOLS:
        metrics = summarize(rows[p], baseline[p] if p in fwt_protocols else None, la, test_sizes)
        for name, value in metrics.items():
            out.setdefault(name, {})[p] = value
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
    fig.savefig(path, dpi=150, bbox_inches="tight")
    fig.savefig(Path(path).with_suffix(".svg"), bbox_inches="tight")
    plt.close(fig)


def plot_methods(results: dict[str, Any], path: Any, title: str = "",
                 extra: dict[str, dict[str, float]] | None = None) -> None:
    """One figure comparing every method of a run: average accuracy over the tasks seen so far after each
    stage, class-IL and task-IL side by side (PNG at 150 dpi, and SVG beside it). ``extra`` adds models
    measured only at the end (name -> accuracy per protocol), drawn as a star at the last stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, protocol in zip(axes, PROTOCOLS):
        for key, r in results["methods"].items():
            rows = r["accuracy_matrix"][protocol]
            seen_avg = [sum(row[: i + 1]) / (i + 1) for i, row in enumerate(rows)]
            ax.plot(range(1, len(rows) + 1), seen_avg, marker="o", label=f"{key} ({seen_avg[-1]:.3f})")
        for key, acc in (extra or {}).items():
            ax.plot([len(rows)], [acc[protocol]], marker="*", markersize=14, linestyle="none",
                    label=f"{key} ({acc[protocol]:.3f})")
        ax.set_title("class-IL" if protocol == "class_il" else "task-IL")
        ax.set_xlabel("after stage (tasks seen)")
        ax.set_xticks(range(1, len(rows) + 1))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("average accuracy over the tasks seen")
    save_figure(fig, path, title)


def save_figure(fig: Any, path: Any, title: str = "") -> None:
    """Title, lay out and save a matplotlib figure as PNG (150 dpi, readable) and as SVG beside it, then
    close it."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    fig.savefig(Path(path).with_suffix(".svg"))
    plt.close(fig)
