"""Metrics against hand-computed matrices, and the class-IL / task-IL protocols on a fixed predictor."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from zoo.metrics import (average_incremental_accuracy, backward_transfer, final_average_accuracy,
                         final_weighted_accuracy, forgetting, forward_transfer, plot_accuracy_matrix,
                         results_from_rows, task_accuracies)

R = [[0.9, 0.1, 0.0],
     [0.6, 0.8, 0.2],
     [0.5, 0.7, 0.95]]
B = [0.1, 0.05, 0.1]

# The peers' formulas, evaluated by hand on each matrix below and written in as numbers:
# - mammoth (utils/metrics.py): results[i] holds tasks 0..i only (later entries padded with 0), so stages
#   before a task was learnt never count; forgetting_j = max over *all* rows (the last included) - last row,
#   which clamps each f_j at 0; BWT = mean_j R[T-1][j] - R[j][j].
# - Avalanche (ExperienceForgetting / StreamForgetting): accuracy when the experience was last trained minus
#   the current one, i.e. forgetting = -BWT.
# zoo follows Chaudhry et al. / ALGORITHMS.md §0: max over learned_at[j] <= l <= T-2, not clamped.


def test_summary_metrics_by_hand():
    assert final_average_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    assert average_incremental_accuracy(R) == pytest.approx((0.9 + 0.7 + 2.15 / 3) / 3)
    assert forgetting(R) == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert backward_transfer(R) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert forward_transfer(R, B) == pytest.approx(((0.1 - 0.05) + (0.2 - 0.1)) / 2)


def test_stages_before_a_task_was_learnt_never_count():
    # Task 2 scores 0.95 at stage 0, before it is learnt (at stage 2): that must not count as its peak.
    m = [[0.9, 0.1, 0.95, 0.1],
         [0.8, 0.9, 0.2, 0.1],
         [0.7, 0.8, 0.9, 0.2],
         [0.6, 0.8, 0.85, 0.9]]
    mammoth, avalanche = 0.15, 0.15  # f = [0.3, 0.1, 0.05] under both
    assert forgetting(m) == pytest.approx(mammoth) == pytest.approx(avalanche)
    assert forgetting(m) != pytest.approx(0.5 / 3)  # the old definition's 0.167 took R[0][2] as the peak
    assert backward_transfer(m) == pytest.approx(-0.15)


def test_a_task_improving_after_it_is_learnt():
    m = [[0.6, 0.0, 0.0],
         [0.9, 0.7, 0.0],
         [0.3, 0.8, 0.8]]
    # zoo: f0 = max(0.6, 0.9) - 0.3 = 0.6, f1 = 0.7 - 0.8 = -0.1 (task 1 improved after it was learnt)
    f = [0.9 - 0.3, 0.7 - 0.8]
    assert forgetting(m) == pytest.approx(0.25)
    mammoth = 0.3  # its max includes the last row: f1 = max(0, 0.7, 0.8) - 0.8 = 0
    avalanche = 0.1  # (0.6 - 0.3 + 0.7 - 0.8) / 2
    assert sum(max(0.0, v) for v in f) / 2 == pytest.approx(mammoth)  # mammoth's clamp is the only difference
    assert backward_transfer(m) == pytest.approx(-avalanche)


def test_bmc_batches_count_from_the_stage_a_task_was_learnt():
    # K = 2 over 5 tasks: tasks 0, 1 learnt at stage 1, tasks 2, 3 at stage 3, task 4 at stage 4. Rows inside
    # a batch show the base as it was before the batch.
    m = [[0.10, 0.10, 0.00, 0.00, 0.00],
         [0.95, 0.90, 0.00, 0.00, 0.00],
         [0.95, 0.90, 0.00, 0.00, 0.00],
         [0.85, 0.80, 0.90, 0.95, 0.00],
         [0.80, 0.75, 0.85, 0.90, 0.90]]
    learned = [1, 1, 3, 3, 4]
    # mammoth's and Avalanche's formulas with each task's learning stage in place of its index:
    # f = [0.95-0.80, 0.90-0.75, 0.90-0.85, 0.95-0.90] = [0.15, 0.15, 0.05, 0.05]
    assert forgetting(m, learned) == pytest.approx(0.10)
    assert backward_transfer(m, learned) == pytest.approx(-0.10)
    # counted from the diagonal instead, BWT came out +0.3375: the "impossible" positive BWT of the old code
    assert backward_transfer(m) == pytest.approx(0.3375)
    assert abs(backward_transfer(m, learned)) <= forgetting(m, learned) + 1e-12


def test_two_stage_stream():
    m = [[0.9, 0.0], [0.7, 0.95]]
    mammoth = avalanche = 0.2
    assert forgetting(m) == pytest.approx(mammoth) == pytest.approx(avalanche)
    assert backward_transfer(m) == pytest.approx(-0.2)
    assert forward_transfer(m, [0.5, 0.1]) == pytest.approx(0.0 - 0.1)
    assert final_weighted_accuracy(m, [100, 300]) == pytest.approx((0.7 * 100 + 0.95 * 300) / 400)
    assert final_average_accuracy(m) == pytest.approx(0.825)


def test_undefined_metrics_are_none_and_bad_shapes_raise():
    assert forgetting([[0.7]]) is None and backward_transfer([[0.7]]) is None
    assert forward_transfer([[0.7]], [0.1]) is None
    # one BMC batch covering the whole stream: nothing was learnt before the last stage
    assert forgetting([[0.1, 0.1], [0.9, 0.9]], [1, 1]) is None
    with pytest.raises(ValueError):
        final_average_accuracy([[1.0, 0.0]])
    with pytest.raises(ValueError):
        forward_transfer(R, [0.1])
    with pytest.raises(ValueError, match="learned_at"):
        forgetting(R, [0, 1])
    with pytest.raises(ValueError, match="learned_at"):
        forgetting(R, [0, 3, 2])


def test_results_block_and_heatmap(tmp_path):
    rows = {"class_il": R, "task_il": [[1.0, 0.5, 0.5], [0.9, 1.0, 0.5], [0.9, 0.9, 1.0]]}
    base = {"class_il": B, "task_il": [0.5, 0.5, 0.5]}
    res = results_from_rows(rows, base, [0, 1, 2], [10, 10, 20], fwt_protocols=("task_il",))
    assert res["accuracy_matrix"]["class_il"] == R
    assert res["learned_at"] == [0, 1, 2] and res["test_sizes"] == [10, 10, 20]
    assert res["fwt"]["class_il"] is None and res["fwt"]["task_il"] == pytest.approx(0.0)
    assert res["final_weighted_accuracy"]["class_il"] == pytest.approx((0.5 + 0.7 + 2 * 0.95) / 4)
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
