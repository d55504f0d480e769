"""BMC: buffers, the batched (vmap) teacher against a per-expert loop, consolidation, and the digits run."""

from __future__ import annotations

import json

import pytest
import torch

from zoo.buffer import Buffer, balanced_indices, build_buffer, equal_share, resize
from zoo.augment import augment
from zoo.consolidate import BatchedTeacher, ConsolidationConfig, consolidate, looped_features
from zoo.data import Split
from zoo.models import create_model


def _experts(arch: str, k: int, **kwargs):
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(create_model(arch, 10, **kwargs).eval())
    return out


@pytest.mark.parametrize("arch, shape, kwargs", [
    ("mlp", (64,), {"in_features": 64, "hidden": 32}),
    ("convnet", (1, 16, 16), {"in_chans": 1, "width": 8}),
    ("resnet32", (3, 32, 32), {}),
])
def test_batched_teacher_equals_per_expert_loop(arch, shape, kwargs):
    experts = _experts(arch, 4, **kwargs)
    for e in experts:  # non-trivial BatchNorm statistics, so the eval-mode buffers matter
        for m in e.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 6, *shape, generator=torch.Generator().manual_seed(0))
    batched = BatchedTeacher(experts)(x)
    looped = looped_features(experts, x)
    assert batched.shape == looped.shape == (4, 6, experts[0].num_features)
    rel = (batched - looped).abs().max() / looped.abs().max()
    assert rel < 1e-5, float(rel)
    # and it really is per expert: expert 1 on x[1] differs from expert 0 on x[1]
    assert not torch.allclose(looped[1], looped_features(experts[:1], x[1:2])[0])


def test_balanced_indices_spread_classes_without_replacement():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 4)
    idx = balanced_indices(y, 30, torch.Generator().manual_seed(0))
    assert len(idx) == 30 and len(set(idx.tolist())) == 30
    counts = torch.bincount(y[idx], minlength=3).tolist()
    assert counts[2] == 4 and abs(counts[0] - counts[1]) <= 1  # the small class gives its spare quota away
    assert len(balanced_indices(y, 1000, torch.Generator())) == len(y)


def _buffer(n: int, task: int, classes: list[int]) -> Buffer:
    y = torch.tensor(classes).repeat(n // len(classes))
    return Buffer(torch.randn(len(y), 8), y, torch.randn(len(y), 4), torch.tensor(classes), task)


def test_equal_share_and_resize_keep_balance():
    buffers = [_buffer(100, 0, [0, 1]), _buffer(60, 1, [2, 3]), _buffer(10, 2, [4, 5])]
    cut = equal_share(buffers, 90, torch.Generator().manual_seed(0))
    assert [len(b) for b in cut] == [30, 30, 10]
    assert torch.bincount(cut[0].y).tolist() == [15, 15]
    assert resize(buffers[2], 50, torch.Generator()) is buffers[2]
    back = Buffer.from_tensors(cut[1].tensors())
    assert torch.equal(back.x, cut[1].x) and back.task == 1 and back.classes.tolist() == [2, 3]


def test_build_buffer_records_expert_features():
    torch.manual_seed(0)
    expert = create_model("mlp", 10, in_features=8, hidden=16).eval()
    split = Split(torch.randn(200, 8), torch.tensor([3, 7]).repeat(100))
    buf = build_buffer(expert, split, [3, 7], task=1, fraction=0.1, cap=15, generator=torch.Generator().manual_seed(1))
    assert len(buf) == 15 and buf.task == 1 and set(buf.y.tolist()) == {3, 7}
    assert torch.allclose(buf.features, expert.features(buf.x))


def test_augment_crop_flip_and_noise():
    g = torch.Generator().manual_seed(0)
    img = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    out = augment(img, "crop_flip", g)
    assert out.shape == img.shape
    vec = torch.zeros(5, 64)
    noisy = augment(vec, "auto", g)
    assert noisy.shape == vec.shape and 0 < noisy.std() < 0.2
    assert torch.equal(augment(img, "none", g), img)


@pytest.mark.parametrize("teacher", ["stored", "live"])
def test_consolidation_distils_experts_into_the_base(teacher):
    # Two "experts" that each know one half of a linearly separable 4-class problem; the base learns both
    # from their buffers alone.
    torch.manual_seed(0)
    centers = torch.randn(4, 16) * 3
    def data(classes, n=200):
        y = torch.tensor(classes).repeat(n // len(classes))
        return centers[y] + 0.3 * torch.randn(len(y), 16), y
    experts, buffers = [], []
    for t, classes in enumerate([[0, 1], [2, 3]]):
        torch.manual_seed(10 + t)
        e = create_model("mlp", 4, in_features=16, hidden=32).eval()
        x, y = data(classes)
        buffers.append(Buffer(x, y, e.features(x).detach(), torch.tensor(classes), t))
        experts.append(e)
    torch.manual_seed(1)
    base = create_model("mlp", 4, in_features=16, hidden=32)
    cfg = ConsolidationConfig(epochs=30, lr=0.003, teacher=teacher, patience=None)
    result = consolidate(base, buffers, [], cfg, seen_classes=[0, 1, 2, 3], num_classes=4, experts=experts,
                         progress=False)
    x, y = data([0, 1, 2, 3], 400)
    acc = (base(x).argmax(1) == y).float().mean().item()
    assert acc > 0.95 and result.epochs_run == 30
    # the feature term pulls the base's features towards the experts'
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]


# --- BMC end to end on Split-Digits ---------------------------------------------------------------------------

from pathlib import Path  # noqa: E402

from registry import LocalRegistry  # noqa: E402
from zoo.recipe import load_recipe  # noqa: E402
from zoo.runner import RunOptions, run_recipe  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "bmc-digits.yaml"


@pytest.fixture(scope="module")
def bmc_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bmc")
    results = run_recipe(load_recipe(RECIPE), RunOptions(out=out / "run", registry=str(out / "reg"), progress=False))
    return out, results


def test_bmc_beats_finetune_twice_and_matches_replay(bmc_run):
    _, results = bmc_run
    m = results["methods"]
    bmc, replay, finetune = (m[k]["final_average_accuracy"]["class_il"] for k in ("bmc", "replay", "finetune"))
    assert bmc >= 2 * finetune
    assert bmc >= replay
    from tests.helpers import assert_metrics_recompute

    for key in ("bmc", "replay", "finetune"):
        assert_metrics_recompute(m[key])
    assert m["bmc"]["learned_at"] == [1, 1, 3, 3, 4]
    assert m["bmc"]["memory"]["exemplars"] == m["replay"]["memory"]["exemplars"] == 200  # equal memory


def test_bmc_batches_and_trailing_partial_batch(bmc_run):
    _, results = bmc_run
    stages = results["methods"]["bmc"]["stages"]
    assert [s["info"].get("batch") for s in stages] == [None, [0, 1], None, [2, 3], [4]]
    assert "deferred" in stages[0]["info"]
    # inside a batch nothing is learnt yet: task 0's class-IL accuracy after stage 0 is the fresh base's
    matrix = results["methods"]["bmc"]["accuracy_matrix"]["class_il"]
    assert matrix[0][0] < 0.8 and matrix[1][0] > 0.9


def test_bmc_experts_buffers_and_lineage_in_registry(bmc_run):
    out, _ = bmc_run
    reg = LocalRegistry(out / "reg")
    base = reg.card("bmc-digits-bmc-base-s3")
    roles = [p.role for p in base.parents]
    assert roles == ["base", "expert", "expert"]
    assert base.parents[0].id == reg.card("bmc-digits-bmc-base-s1").id
    expert = reg.get(base.parents[1].id)
    assert expert.card.task_ids == [2] and expert.card.base.id == base.parents[0].id
    buf = Buffer.from_tensors(expert.buffer())
    assert buf.task == 2 and set(buf.y.tolist()) <= set(buf.classes.tolist()) and len(buf) == 200
    assert torch.allclose(buf.features, expert.model().features(buf.x), atol=1e-5)
    assert base.hyperparameters["consolidation"]["epochs"] == 60
    assert expert.card.buffer["task_offset"] == 4 and expert.card.buffer["task_length"] == 2


@pytest.mark.parametrize("kind", ["process", "ray"])
def test_bmc_runs_on_parallel_executors(tmp_path, kind, request):
    if kind == "ray":
        request.getfixturevalue("ray_executor")  # the session's local Ray; BMC's executor joins it
    recipe = load_recipe(RECIPE, {"training.epochs": 5, "stream.n_tasks": 2})
    recipe.methods = [m for m in recipe.methods if m.method == "bmc"]
    recipe.methods[0].params.executor = kind
    recipe.methods[0].params.consolidation.epochs = 20
    results = run_recipe(recipe, RunOptions(out=tmp_path / "run", registry="none", progress=False))
    bmc = results["methods"]["bmc"]
    assert [e["task"] for e in bmc["stages"][1]["info"]["experts"]] == [0, 1]
    assert bmc["final_average_accuracy"]["class_il"] > 0.85


def test_bmc_resumes(tmp_path, monkeypatch):
    from tests.helpers import interrupt_and_resume
    from zoo.methods import bmc

    recipe = load_recipe(RECIPE, {"training.epochs": 4})
    recipe.methods = [m for m in recipe.methods if m.method == "bmc"]
    recipe.methods[0].params.consolidation.epochs = 10
    straight, resumed = interrupt_and_resume(recipe, bmc.BMC, 3, tmp_path, monkeypatch)
    assert resumed["trained_on_resume"] == [3, 4]
    assert resumed["methods"]["bmc"]["accuracy_matrix"] == straight["methods"]["bmc"]["accuracy_matrix"]


def test_bmc_boosting_schedule_gives_experts_groups(tmp_path):
    recipe = load_recipe(RECIPE, {"training.epochs": 5})
    recipe.methods = [m for m in recipe.methods if m.method == "bmc"]
    params = recipe.methods[0].params
    params.batch_tasks, params.schedule, params.k = 1, "boosting", 3
    params.consolidation.epochs = 15
    results = run_recipe(recipe, RunOptions(out=tmp_path / "run", registry="none", progress=False))
    stages = results["methods"]["bmc"]["stages"]
    groups = [s["info"]["experts"][0]["group"] for s in stages]
    assert groups[0] == [0] and all(g[0] == t for t, g in enumerate(groups))
    assert all(len(g) == min(3, t + 1) and len(set(g)) == len(g) for t, g in enumerate(groups))
    assert set(stages[-1]["info"]["weights"]) == {"0", "1", "2", "3", "4"}
    assert results["methods"]["bmc"]["final_average_accuracy"]["class_il"] > 0.8


def test_bmc_batches_of_four_record_learned_at_and_a_possible_bwt(tmp_path):
    """K = 4 over 5 tasks: tasks 0-3 are learnt at stage 3, task 4 at stage 4. BWT counts from there, so it
    cannot exceed the forgetting (the old diagonal definition gave +0.41 with forgetting about 0)."""
    from tests.helpers import assert_metrics_recompute

    recipe = load_recipe(RECIPE, {"training.epochs": 10})
    recipe.methods = [m for m in recipe.methods if m.method == "bmc"]
    recipe.methods[0].params.batch_tasks = 4
    recipe.methods[0].params.consolidation.epochs = 30
    results = run_recipe(recipe, RunOptions(out=tmp_path / "run", registry="none", progress=False))
    bmc = results["methods"]["bmc"]
    assert bmc["learned_at"] == [3, 3, 3, 3, 4]
    assert_metrics_recompute(bmc)
    assert abs(bmc["bwt"]["class_il"]) <= 0.1 and -bmc["bwt"]["class_il"] <= bmc["forgetting"]["class_il"] + 1e-12
    saved = json.loads((tmp_path / "run" / "bmc" / "results.json").read_text())
    assert saved["learned_at"] == [3, 3, 3, 3, 4] and saved["bwt"] == bmc["bwt"]
