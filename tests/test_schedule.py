"""Model Zoo: the boosting weights, group sampling, presets, resume, the ensemble, and the digits run."""

from __future__ import annotations

import json
import math
from pathlib import Path

from types import SimpleNamespace

import pytest
import torch

from registry import LocalRegistry
from tests.test_cli import zoo
from zoo.ensemble import Member, ZooEnsemble, nll_per_task
from zoo.recipe import load_recipe
from zoo.runner import RunOptions, run_recipe
from zoo.schedule import BoostingConfig, BoostingScheduler, boosting_weights

ROOT = Path(__file__).resolve().parents[1]


def test_weights_normalised_over_seen_tasks():
    losses = {0: 0.5, 1: 1.0, 2: 1.5}  # mean 1.0
    w = boosting_weights(losses, BoostingConfig(normalize="seen"))
    assert w[0] == pytest.approx(math.exp(-0.5)) and w[1] == pytest.approx(1.0) and w[2] == pytest.approx(math.exp(0.5))


def test_weights_normalised_over_all_tasks_with_unseen_at_log_classes():
    losses = {0: 0.2, 1: 0.6}
    num_classes = {0: 2, 1: 2, 2: 2, 3: 2}  # unseen tasks 2, 3 count log 2 each
    mean = (0.2 + 0.6 + 2 * math.log(2)) / 4
    w = boosting_weights(losses, BoostingConfig(normalize="all"), num_classes, 4)
    assert w[0] == pytest.approx(math.exp((0.2 - mean) / mean)) and w[1] == pytest.approx(math.exp((0.6 - mean) / mean))


def test_weights_are_clipped():
    losses = {t: 1e-6 for t in range(9)} | {9: 1.0}  # task 9's ratio (1 - 0.1) / 0.1 = 9: e^9 > 1e3
    w = boosting_weights(losses, BoostingConfig())
    assert w[9] == 1e3
    assert w[0] == pytest.approx(math.exp(-1), rel=1e-4)  # the floor of (l - mean) / mean is -1


def test_new_task_always_present_and_no_repeats():
    sched = BoostingScheduler(range(10), BoostingConfig(k=4), seed=0)
    for t in range(10):
        groups = sched.next_round(new_task=t, n_groups=2)
        assert groups[0][0] == t
        flat = [x for g in groups for x in g]
        assert len(flat) == len(set(flat))  # no repeats within a round, groups disjoint
        assert all(x <= t for x in flat)  # only seen tasks
        assert len(groups[0]) == min(4, t + 1)
        sched.update({s: 1.0 + 0.1 * s for s in sched.seen})


def test_round_size_presets():
    sizes = {}
    for preset in ("paper", "mzc"):
        sched = BoostingScheduler(range(8), BoostingConfig(k=3, round_size=preset), seed=1)
        sizes[preset] = [len(sched.next_round(new_task=t)[0]) for t in range(8)]
    assert sizes["paper"] == [1, 2, 3, 3, 3, 3, 3, 3]
    assert sizes["mzc"] == [1, 1, 2, 3, 3, 3, 3, 3]  # the reference repository's off-by-one


def test_high_weight_tasks_are_drawn_more_often():
    sched = BoostingScheduler(range(6), BoostingConfig(k=2), seed=0)
    for t in range(5):
        sched.next_round(new_task=t)
    sched.weights.update({0: 1000.0, 1: 1e-4, 2: 1e-4, 3: 1e-4, 4: 1e-4})
    picks = [sched.next_round(new_task=5)[0][1] for _ in range(20)]
    assert picks.count(0) >= 18


def test_multi_task_mode_draws_k_from_all():
    sched = BoostingScheduler(range(7), BoostingConfig(k=3), seed=0)
    groups = sched.next_round(n_groups=3)
    assert [len(g) for g in groups] == [3, 3, 1]
    assert sorted(x for g in groups for x in g) == list(range(7))


def test_saved_and_resumed_scheduler_continues_the_same_sequence():
    def run(split_at: int | None):
        sched = BoostingScheduler(range(12), BoostingConfig(k=4), seed=7)
        out = []
        for t in range(12):
            if split_at == t:
                state = json.loads(json.dumps(sched.state_dict()))  # through JSON, as in the run folder
                sched = BoostingScheduler(range(12), BoostingConfig(k=4), seed=999)
                sched.load_state_dict(state)
            out.append(sched.next_round(new_task=t, n_groups=2))
            sched.update({s: 1.0 + (s % 3) for s in sched.seen})
        return out
    assert run(None) == run(6)


def test_ensemble_averages_probabilities_not_logits():
    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = torch.tensor(logits)

        def forward(self, x):
            return self.logits.expand(len(x), -1)

    # Two members, both with a head for task 0 (classes 0, 1); one also for task 1 (classes 2, 3).
    a = Member(Fixed([[4.0, 0.0, 0.0, 1.0]]), [(0, [0, 1]), (1, [2, 3])], True)
    b = Member(Fixed([[-1.0, 0.0]]), [(0, [0, 1])], True)
    scores = ZooEnsemble([a, b], 4)(torch.zeros(1, 1))
    pa = torch.tensor([4.0, 0.0]).softmax(0)
    pb = torch.tensor([-1.0, 0.0]).softmax(0)
    assert torch.allclose(scores[0, :2], (pa + pb) / 2)
    assert not torch.allclose(scores[0, :2], ((torch.tensor([4.0, 0.0]) + torch.tensor([-1.0, 0.0])) / 2).softmax(0))
    assert torch.allclose(scores[0, 2:], torch.tensor([0.0, 1.0]).softmax(0))  # task 1: member a alone
    # per-member, per-task weights: a weighs 3 on task 0
    a.weights = {0: 3.0}
    scores = ZooEnsemble([a, b], 4)(torch.zeros(1, 1))
    assert torch.allclose(scores[0, :2], (3 * pa + pb) / 4)
    from zoo.data import Split

    nll = nll_per_task(ZooEnsemble([a, b], 4), {0: Split(torch.zeros(2, 1), torch.tensor([0, 1]))})
    assert nll[0] == pytest.approx(-(math.log((3 * pa[0] + pb[0]) / 4) + math.log((3 * pa[1] + pb[1]) / 4)) / 2)


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mz")
    recipe = load_recipe(ROOT / "recipes" / "modelzoo-digits.yaml")
    return out, run_recipe(recipe, RunOptions(out=out / "run", registry=str(out / "reg"), progress=False))


def test_modelzoo_beats_isolated_in_task_il(zoo_run):
    _, results = zoo_run
    m = results["methods"]
    zoo_acc = m["modelzoo"]["final_average_accuracy"]["task_il"]
    assert zoo_acc >= m["isolated"]["final_average_accuracy"]["task_il"]
    assert zoo_acc > 0.97
    # the zoo keeps one model per round; memory accounting counts them all
    assert m["modelzoo"]["memory"]["models"] == 5 and m["isolated"]["memory"]["models"] == 5
    assert m["multihead"]["memory"]["models"] == 1
    weights = m["modelzoo"]["stages"][-1]["info"]["weights"]
    assert set(weights) == {"0", "1", "2", "3", "4"}
    from tests.helpers import assert_metrics_recompute

    for key in ("modelzoo", "isolated", "multihead"):
        assert_metrics_recompute(m[key])
    # the heads are counted once with and once without: MEMO's convention leaves them out
    mem = m["modelzoo"]["memory"]
    assert mem["backbone_parameters"] < mem["model_parameters"]
    assert mem["memo"]["backbone"]["model_bytes"] == 4 * mem["backbone_parameters"]


def test_zoo_experts_are_multi_head_with_global_task_ids(zoo_run):
    out, results = zoo_run
    reg = LocalRegistry(out / "reg")
    groups = [s["info"]["group"] for s in results["methods"]["modelzoo"]["stages"]]
    for r, group in enumerate(groups):
        card = reg.card(f"modelzoo-digits-modelzoo-r{r}")
        assert card.task_ids == group and group[0] == r
        assert reg.get(card.id).config().heads == [2] * len(group)


def test_zoo_eval_and_schedule_on_the_registry(zoo_run):
    out, results = zoo_run
    names = [f"modelzoo-digits-modelzoo-r{r}" for r in range(5)]
    code, stdout, err = zoo("eval", *names, "--recipe", str(ROOT / "recipes" / "modelzoo-digits.yaml"),
                            "--registry", str(out / "reg"), "--json")
    assert code == 0, err
    report = json.loads(stdout)
    expected = results["methods"]["modelzoo"]["accuracy_matrix"]["task_il"][-1]
    assert [t["task_il"] for t in report["tasks"]] == pytest.approx(expected)
    code, stdout, err = zoo("schedule", names[0], names[1], "--recipe", str(ROOT / "recipes" / "modelzoo-digits.yaml"),
                            "--registry", str(out / "reg"), "--k", "3", "--json")
    assert code == 0, err
    plan = json.loads(stdout)
    assert plan["new_task"] == 2 and plan["groups"][0][0] == 2 and len(plan["groups"][0]) == 3
    assert set(plan["weights"]) == {"0", "1"}
    code, stdout, _ = zoo("schedule", "--recipe", str(ROOT / "recipes" / "modelzoo-digits.yaml"),
                          "--registry", str(out / "reg"), "--method", "modelzoo", "--groups", "2", "--k", "3")
    assert code == 0 and "multi-task" in stdout and "group 1:" in stdout


def test_modelzoo_resumes(tmp_path, monkeypatch):
    from tests.helpers import interrupt_and_resume
    from zoo.methods import modelzoo

    recipe = load_recipe(ROOT / "recipes" / "modelzoo-digits.yaml", {"training.epochs": 3})
    recipe.methods = recipe.methods[:1]
    straight, resumed = interrupt_and_resume(recipe, modelzoo.ModelZoo, 3, tmp_path, monkeypatch)
    a, b = straight["methods"]["modelzoo"], resumed["methods"]["modelzoo"]
    assert resumed["trained_on_resume"] == [3, 4]
    assert [s["info"]["group"] for s in a["stages"]] == [s["info"]["group"] for s in b["stages"]]
    assert a["accuracy_matrix"] == b["accuracy_matrix"]


def test_limited_replay_cuts_and_duplicates_past_tasks_and_weights_first_model():
    from types import SimpleNamespace

    from zoo.data import Split
    from zoo.methods.modelzoo import group_data

    def task(tid, classes, n):
        y = torch.tensor(classes).repeat(n)
        return SimpleNamespace(id=tid, classes=classes, train=Split(torch.randn(len(y), 3), y),
                               val=Split(torch.randn(len(y), 3), y))

    stream = SimpleNamespace(tasks=[task(0, [0, 1], 50), task(1, [2, 3], 50), task(2, [4, 5], 40)], num_classes=6)
    f = 0.1
    data, heads = group_data(stream, [2, 0, 1], "train", f, 0, new_task=2)
    # the new task keeps all 80 samples; each past task keeps floor(0.1 * 50) = 5 per class, duplicated
    # max(1, floor(1 / ((g - 1) * f))) = 5 times for the group of g = 3
    assert len(data) == 80 + 2 * (2 * 5 * 5)
    assert heads.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.bincount(data.y, minlength=6).tolist() == [40, 40, 25, 25, 25, 25]
    # targets are columns of the multi-head output: task 2's classes 4, 5 are columns 0, 1 (head 0)
    assert set(data.y[:80].tolist()) == {0, 1}


def test_limited_replay_keeps_one_fixed_subset_per_old_task_across_rounds():
    """ALGORITHMS.md §1: each old task keeps one seeded subset of floor(f*N) samples per class, the same in
    every round; copies follow the group's size g, not k."""
    from zoo.data import Split
    from zoo.methods.modelzoo import group_data

    torch.manual_seed(0)
    n = 60  # per class
    tasks = []
    for tid in range(4):
        y = torch.tensor([2 * tid, 2 * tid + 1]).repeat(n)
        x = torch.arange(len(y), dtype=torch.float32)[:, None] + 1000 * tid  # each sample's identity
        tasks.append(SimpleNamespace(id=tid, classes=[2 * tid, 2 * tid + 1], train=Split(x, y), val=Split(x, y)))
    stream = SimpleNamespace(tasks=tasks, num_classes=8)
    f = 0.1

    def old_samples(group, new_task, seed=0):
        data, _ = group_data(stream, group, "train", f, seed, new_task=new_task)
        ids = data.x[:, 0]
        return {tid: ids[(ids >= 1000 * tid) & (ids < 1000 * (tid + 1))] for tid in group if tid != new_task}

    rounds = [old_samples([1, 0], 1), old_samples([2, 0, 1], 2), old_samples([3, 0], 3)]
    distinct = [set(r[0].tolist()) for r in rounds]
    assert all(len(d) == 2 * 6 for d in distinct)  # floor(0.1 * 60) = 6 per class, 2 classes
    assert distinct[0] == distinct[1] == distinct[2]  # the same subset of task 0 every round
    # copies: g = 2 -> floor(1 / (1 * 0.1)) = 10; g = 3 -> floor(1 / (2 * 0.1)) = 5
    assert len(rounds[0][0]) == 12 * 10 and len(rounds[1][0]) == 12 * 5 and len(rounds[1][1]) == 12 * 5
    assert len(rounds[2][0]) == 12 * 10
    # another seed draws another subset
    assert set(old_samples([1, 0], 1, seed=1)[0].tolist()) != distinct[0]
