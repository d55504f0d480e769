"""Ex-Model: the target rule, the BatchNorm prior, the losses, data privacy, the method on Split-Digits, and
data-free consolidation of heterogeneous registry experts (local and on the loopback Hub)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from zoo.distill import distillation_loss, exmodel_targets
from zoo.synthetic import StatsPrior, balanced_labels, blur_prior, fit_inputs

ROOT = Path(__file__).resolve().parents[1]


# --- the target rule ------------------------------------------------------------------------------------------

def _logits(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_targets_disjoint_classes():
    e = _logits([9.0, 9.0, 1.0, 2.0, 9.0, 9.0])  # the new expert knows classes 2, 3; its other logits are noise
    f = _logits([3.0, 4.0, 9.0, 9.0, 9.0, 9.0])  # the previous student knows 0, 1
    t = exmodel_targets(e, [2, 3], f, [0, 1])
    assert t.tolist() == [[3.0, 4.0, 1.0, 2.0, 0.0, 0.0]]  # raw logits; unseen classes 4, 5 stay 0


def test_targets_overlapping_classes_are_halved():
    e = _logits([0.0, 0.0, 4.0, 6.0])
    f = _logits([2.0, 8.0, 2.0, 0.0])
    t = exmodel_targets(e, [2, 3], f, [1, 2])
    assert t.tolist() == [[0.0, 8.0, 3.0, 6.0]]  # class 2 known to both: (4 + 2) / 2


def test_targets_domain_incremental_average_everything():
    e = _logits([1.0, 3.0, 5.0])
    f = _logits([3.0, 1.0, -1.0])
    t = exmodel_targets(e, [0, 1, 2], f, [0, 1, 2])
    assert t.tolist() == [[2.0, 2.0, 2.0]]


def test_targets_first_expert_and_unseen_classes():
    e = _logits([5.0, 7.0, 100.0], [1.0, -1.0, -100.0])
    t = exmodel_targets(e, [0, 1])
    assert t.tolist() == [[5.0, 7.0, 0.0], [1.0, -1.0, 0.0]]
    centred = exmodel_targets(e, [0, 1], bias_normalization=True)
    assert centred.tolist() == [[-1.0, 1.0, 0.0], [1.0, -1.0, 0.0]]


def test_kd_loss_uses_a_proper_log_softmax():
    seen = torch.tensor([True, True, True, False])
    target = _logits([1.0, 2.0, 3.0, 0.0])
    same = distillation_loss(target.clone(), target, None, seen, loss="kd", tau=2.0)
    other = distillation_loss(_logits([3.0, 2.0, 1.0, 50.0]), target, None, seen, loss="kd", tau=2.0)
    assert abs(float(same)) < 1e-6 and float(other) > 0.1 and math.isfinite(float(other))
    mse = distillation_loss(_logits([1.0, 2.0, 3.0, 1.0]), target, torch.tensor([2]), seen)
    assert float(mse) == pytest.approx(0.25 + float(torch.nn.functional.cross_entropy(
        _logits([1.0, 2.0, 3.0]), torch.tensor([2]))), rel=1e-5)


# --- the priors ----------------------------------------------------------------------------------------------

def _two_bn_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    net.eval()
    return net


def test_the_bn_prior_is_the_sum_over_every_bn_layer():
    net = _two_bn_net()
    x = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    prior = StatsPrior(net, mode="bn")
    with prior:
        net(x)
    base = float(prior.pop().detach())
    # perturb the second BN layer alone: the loss must change (an overwrite-by-last or first-only bug would
    # show here), and equal the hand-computed sum of both layers' terms
    net[4].running_mean.add_(1.0)
    with prior:
        net(x)
    perturbed = float(prior.pop().detach())
    assert perturbed != pytest.approx(base)
    terms = []
    inputs = {}
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: inputs.__setitem__(k, i[0].detach()))
             for k, m in ((1, net[1]), (4, net[4]))]
    net(x)
    for h in hooks:
        h.remove()
    for k in (1, 4):
        t = inputs[k]
        mu, var = t.mean([0, 2, 3]), t.var([0, 2, 3], unbiased=False)
        terms.append(float(((mu - net[k].running_mean) ** 2).sum() + ((var - net[k].running_var) ** 2).sum()))
    assert perturbed == pytest.approx(sum(terms), rel=1e-5)
    # perturbing the first layer alone changes it too
    net[1].running_var.mul_(3.0)
    with prior:
        net(x)
    assert float(prior.pop().detach()) != pytest.approx(perturbed)


def test_stats_prior_without_batchnorm_uses_frozen_output_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2))
    real = torch.randn(64, 5)
    prior = StatsPrior(net)
    assert prior.mode == "outputs" and len(prior.layers) == 2
    with pytest.raises(RuntimeError, match="freeze"):
        with prior:
            net(real)
    prior.freeze(real)
    with prior:
        net(real)
    assert float(prior.pop().detach()) == pytest.approx(0.0, abs=1e-10)
    with prior:
        net(real * 3 + 1)
    assert float(prior.pop().detach()) > 0.1


def test_blur_labels_and_input_fitting():
    smooth = torch.ones(2, 1, 9, 9)
    rough = torch.randn(2, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    assert float(blur_prior(smooth)) < 1e-5 < float(blur_prior(rough))
    assert balanced_labels([3, 4, 5], 7).tolist() == [3, 3, 3, 4, 4, 5, 5]
    flat = torch.randn(10, 64)
    assert fit_inputs(flat, (1, 28, 28)).shape == (10, 1, 28, 28)
    assert fit_inputs(torch.randn(10, 1, 28, 28), (64,)).shape == (10, 64)
    with pytest.raises(ValueError):
        fit_inputs(torch.randn(3, 10), (1, 8, 8))


# --- the method ----------------------------------------------------------------------------------------------

SMALL = {"training.epochs": 15}


def _digits_recipe(sources=("noise", "inversion")):
    from zoo.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "exmodel-digits.yaml", SMALL)
    keep = {"last_expert", *sources}
    recipe.methods = [m for m in recipe.methods if m.key in keep]
    for m in recipe.methods:
        if m.method == "exmodel":
            m.params.distill.iterations = 300
            m.params.buffer_size = 500
            m.params.inversion.steps = 60
    return recipe


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from zoo.runner import RunOptions, run_recipe

    out = tmp_path_factory.mktemp("exmodel")
    recipe = _digits_recipe(("noise", "inversion", "replay"))
    return out, run_recipe(recipe, RunOptions(out=out / "run", registry=str(out / "reg"), progress=False,
                                                push="stages"))


def test_exmodel_students_learn_from_experts_alone(digits_run):
    from tests.helpers import assert_metrics_recompute

    _, results = digits_run
    acc = {k: m["final_average_accuracy"]["class_il"] for k, m in results["methods"].items()}
    # measured with these small settings (seed 0): last expert 0.20, noise ~0.5, inversion ~0.55, replay ~0.9
    assert acc["last_expert"] < 0.25
    assert acc["inversion"] > 2 * acc["last_expert"] and acc["noise"] > 1.5 * acc["last_expert"]
    assert acc["replay"] >= max(acc["noise"], acc["inversion"])
    for m in results["methods"].values():
        assert_metrics_recompute(m)
    replay = results["methods"]["replay"]
    assert all(s["info"].get("breaks_setting") for s in replay["stages"]) and replay["breaks_setting"] is True
    assert "breaks_setting" not in results["methods"]["inversion"]
    assert not any(s["info"].get("breaks_setting") for s in results["methods"]["inversion"]["stages"])
    # the buffer: a fixed total split over the experts (500 // 5 = 100 per expert at the end)
    assert results["methods"]["inversion"]["stages"][-1]["info"]["buffer"] == 500
    assert results["methods"]["inversion"]["memory"]["exemplars"] == 500


def test_exmodel_publishes_experts_and_students_with_lineage(digits_run):
    from registry import LocalRegistry

    out, _ = digits_run
    reg = LocalRegistry(out / "reg")
    student = reg.card("exmodel-digits-inversion-student-s4")
    roles = [p.role for p in student.parents]
    assert roles == ["base", "expert"]
    assert student.parents[0].id == reg.card("exmodel-digits-inversion-student-s3").id
    expert = reg.card(student.parents[1].id)
    assert expert.task_ids == [4] and expert.parents == [] and expert.hyperparameters["input_shape"] == [64]
    assert student.hyperparameters["source"] == "inversion" and student.hyperparameters["inversion"]["lambda_bn"] == 0.01
    # every expert starts from one shared initialisation: the first two experts differ only by training
    assert "test_class_il_accuracy" in student.metrics


class _Private:
    """A split whose data may not be read: the student's training must never touch it."""

    def __init__(self, name):
        self.name = name

    def __len__(self):
        raise AssertionError(f"{self.name} was read")

    def __getattr__(self, item):
        raise AssertionError(f"{self.name}.{item} was read by the student's training")


def test_no_training_data_of_a_distilled_task_is_read(tmp_path, monkeypatch):
    """After its expert is trained, a task's train/val splits are made private (raise when touched); the
    data-free students still train, so they never read them."""
    from zoo.methods import exmodel
    from zoo.runner import RunOptions, run_recipe

    real = exmodel.task_expert

    def then_private(ctx, t):
        out = real(ctx, t)
        task = ctx.stream.tasks[t]
        task.train, task.val = _Private(f"task {t} train"), _Private(f"task {t} val")
        return out

    monkeypatch.setattr(exmodel, "task_expert", then_private)
    recipe = _digits_recipe(("noise", "inversion"))
    recipe.methods = [m for m in recipe.methods if m.method == "exmodel"]
    for m in recipe.methods:
        m.params.distill.iterations = 50
        m.params.inversion.steps = 10
    results = run_recipe(recipe, RunOptions(out=tmp_path / "run", registry="none", progress=False))
    assert set(results["methods"]) == {"noise", "inversion"}
    # the guard works: replay, which does read the task's data, trips it
    replay = _digits_recipe(("replay",))
    replay.methods = [m for m in replay.methods if m.key == "replay"]
    replay.methods[0].params.distill.iterations = 5
    with pytest.raises(AssertionError, match="was read"):
        run_recipe(replay, RunOptions(out=tmp_path / "replay", registry="none", progress=False))


# --- data-free consolidation of registry experts ---------------------------------------------------------------

@pytest.fixture(scope="module")
def hetero_experts(tmp_path_factory):
    """Two Split-Digits experts of different architectures (an MLP and a residual MLP, different widths and
    initialisations) on tasks 0 (classes of the first half) and 1, in a local registry."""
    from registry import LocalRegistry
    from zoo.data import build_stream
    from zoo.models import create_model
    from zoo.train import TrainConfig, fit

    root = tmp_path_factory.mktemp("hetero") / "reg"
    reg = LocalRegistry(root)
    stream = build_stream({"dataset": "digits", "scenario": "split", "n_tasks": 2})
    for task, (arch, args, seed) in zip(stream.tasks, [("mlp", {"in_features": 64, "hidden": 96}, 1),
                                                        ("resmlp", {"in_features": 64, "hidden": 48}, 2)]):
        torch.manual_seed(seed)
        model = create_model(arch, 10, **args)
        fit(model, task.train, task.val, TrainConfig(epochs=20, batch_size=32), num_classes=10, classes=task.classes,
            progress=False)
        reg.save(model, name=f"hetero-{arch}", tasks=[(task.id, task.classes)], method="finetune",
                 hyperparameters={"input_shape": [64]}, labels=["digits"])
    return reg, stream


def _class_il(model, stream) -> float:
    from zoo.train import accuracy, class_mask

    mask = class_mask(list(range(10)), 10, torch.device("cpu"))
    x = torch.cat([t.test.x for t in stream.tasks])
    y = torch.cat([t.test.y for t in stream.tasks])
    from zoo.data import Split

    return accuracy(model, Split(x, y), mask)


def test_consolidate_exmodel_from_heterogeneous_hub_experts(hetero_experts, hub_server, hub_repo):
    from registry import HubRegistry
    from tests.test_cli import zoo

    reg, stream = hetero_experts
    uri = f"hf://{hub_repo}"
    code, _, err = zoo("--quiet", "push", "--to", uri, "--registry", str(reg.root))
    assert code == 0, err
    code, out, err = zoo("--quiet", "consolidate", "--method", "exmodel", "--source", "inversion", "--label", "digits",
                         "--registry", uri, "--student-arch", "mlp", "--buffer-size", "1000", "--iterations", "600",
                         "--distill-lr", "0.01", "--inversion-steps", "150", "--as", "data-free", "--tag-as",
                         "base:latest")
    assert code == 0, err
    hub = HubRegistry(hub_repo)
    card = hub.card("base:latest")
    assert card.name == "data-free" and card.method == "exmodel-distillation"
    assert [p.role for p in card.parents] == ["expert", "expert"] and card.task_ids == [0, 1]
    recipe = card.hyperparameters["recipe"]
    assert recipe["source"] == "inversion" and recipe["distill"]["iterations"] == 600
    assert recipe["inversion"]["steps"] == 150 and recipe["input_shape"] == [64]
    student = _class_il(hub.get("data-free").model(), stream)
    singles = [_class_il(reg.get(n).model(), stream) for n in ("hetero-mlp", "hetero-resmlp")]
    # Measured (seed 0): each expert alone 0.498 / 0.491 on the union of the 10 classes; the data-free student
    # 0.77 (0.97 on the first expert's task, 0.56 on the second's). Issue 10 hoped for 2x the better expert
    # (~1.0, i.e. perfect class-IL); what holds is about 1.5x.
    assert max(singles) < 0.55
    assert student >= 1.35 * max(singles), (student, singles)
    print(json.dumps({"student": student, "experts": singles}))


def test_consolidate_exmodel_errors(hetero_experts):
    from tests.helpers import snapshot
    from tests.test_cli import zoo

    reg, _ = hetero_experts
    before = snapshot(reg.root)
    for args, message in ((["--source", "aux"], "--aux"), (["--input-shape", "1,x"], "input-shape"),
                          (["--student-arch", "nope"], "unknown architecture"),
                          (["--input-shape", "3,32,32"], "cannot take inputs")):
        code, _, err = zoo("consolidate", "--method", "exmodel", "--label", "digits", "--registry", str(reg.root),
                           "--iterations", "1", "--inversion-steps", "1", *args)
        assert code != 0 and message in err and err.count("\n") == 1 and "internal error" not in err, err
    code, _, err = zoo("consolidate", "--label", "digits", "--registry", str(reg.root))
    assert code != 0 and "needs --base" in err
    assert snapshot(reg.root) == before


def test_the_inversion_benchmark_runs():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "bench" / "inversion.py"), "--quick", "--batch", "8", "--steps", "1",
                           "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resnet32" in done.stdout and "image-steps / s" in done.stdout
