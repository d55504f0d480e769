"""Metrics against hand-computed matrices, and the class-IL / task-IL protocols on a fixed predictor."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from zoo.metrics import (average_incremental_accuracy, backward_transfer, final_average_accuracy, forgetting,
                         forward_transfer, plot_accuracy_matrix, results_from_rows, task_accuracies)

R = [[0.9, 0.1, 0.0],
     [0.6, 0.8, 0.2],
     [0.5, 0.7, 0.95]]
B = [0.1, 0.05, 0.1]


def test_summary_metrics_by_hand():
    assert final_average_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    assert average_incremental_accuracy(R) == pytest.approx((0.9 + 0.7 + 2.15 / 3) / 3)
    assert forgetting(R) == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert backward_transfer(R) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert forward_transfer(R, B) == pytest.approx(((0.1 - 0.05) + (0.2 - 0.1)) / 2)


def test_forgetting_takes_the_max_over_earlier_stages():
    # Task 0 peaks after stage 1 (not when it was learnt): forgetting measures from the peak.
    m = [[0.6, 0.0, 0.0], [0.9, 0.7, 0.0], [0.3, 0.7, 0.8]]
    assert forgetting(m) == pytest.approx(((0.9 - 0.3) + (0.7 - 0.7)) / 2)
    assert backward_transfer(m) == pytest.approx(((0.3 - 0.6) + 0.0) / 2)


def test_single_task_and_bad_shapes():
    assert forgetting([[0.7]]) == 0.0 and backward_transfer([[0.7]]) == 0.0
    assert forward_transfer([[0.7]], [0.1]) == 0.0
    with pytest.raises(ValueError):
        final_average_accuracy([[1.0, 0.0]])
    with pytest.raises(ValueError):
        forward_transfer(R, [0.1])


def test_results_block_and_heatmap(tmp_path):
    rows = {"class_il": R, "task_il": [[1.0, 0.5, 0.5], [0.9, 1.0, 0.5], [0.9, 0.9, 1.0]]}
    base = {"class_il": B, "task_il": [0.5, 0.5, 0.5]}
    res = results_from_rows(rows, base)
    assert res["accuracy_matrix"]["class_il"] == R
    assert res["final_average_accuracy"]["task_il"] == pytest.approx(2.8 / 3)
    assert res["forgetting"]["task_il"] == pytest.approx(((1.0 - 0.9) + (1.0 - 0.9)) / 2)
    assert set(res) >= {"final_average_accuracy", "forgetting", "bwt", "fwt", "average_incremental_accuracy"}
    plot_accuracy_matrix(res, tmp_path / "m.png", title="test")
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_class_il_masks_unseen_classes_and_task_il_uses_task_classes():
    # 4 classes; task 1 owns classes 2, 3. The predictor always prefers class 0, then 3, then 2.
    x = torch.zeros(4, 1)
    y = torch.tensor([2, 3, 3, 2])
    task = SimpleNamespace(classes=[2, 3], test=SimpleNamespace(x=x, y=y))
    scores = torch.tensor([[5.0, 0.0, 1.0, 2.0]]).repeat(4, 1)
    predict = lambda xb, t: scores[: len(xb)]  # noqa: E731
    accs = task_accuracies(predict, task, seen_classes=[0, 1, 2, 3], num_classes=4)
    assert accs == {"class_il": 0.0, "task_il": 0.5}  # class-IL picks 0; task-IL picks 3
    accs = task_accuracies(predict, task, seen_classes=[1, 2, 3], num_classes=4)
    assert accs["class_il"] == 0.5  # class 0 masked out: 3 wins
