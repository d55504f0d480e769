"""The main job on real data (Split-Digits): accuracy, forgetting, results.json, experts, eval, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry import LocalRegistry
from tests.helpers import assert_metrics_recompute
from tests.test_cli import zoo
from zoo.recipe import load_recipe
from zoo.runner import RunOptions, run_recipe

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "demo.yaml"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    results = run_recipe(load_recipe(DEMO), RunOptions(out=out / "run", registry=str(out / "reg"), progress=False))
    return out, results


def test_joint_reaches_real_accuracy_and_finetune_forgets(demo_run):
    _, results = demo_run
    m = results["methods"]
    joint, finetune, replay = m["joint"], m["finetune"], m["replay"]
    assert joint["final_average_accuracy"]["class_il"] >= 0.90
    assert joint["final_average_accuracy"]["task_il"] >= 0.95
    # Finetune remembers only the last task in class-IL: about 1/5 of the stream, and forgets most of it.
    assert finetune["final_average_accuracy"]["class_il"] < 0.35
    assert finetune["forgetting"]["class_il"] > 0.7 and finetune["bwt"]["class_il"] < -0.7
    assert replay["final_average_accuracy"]["class_il"] > 2 * finetune["final_average_accuracy"]["class_il"]
    # The last task is learnt by everyone.
    assert finetune["accuracy_matrix"]["class_il"][-1][-1] > 0.9


def test_results_json_and_run_folder(demo_run):
    out, results = demo_run
    run = out / "run"
    assert (run / "recipe.yaml").exists() and (run / "run.log").read_text().count("stage") >= 15
    data = json.loads((run / "finetune" / "results.json").read_text())
    for key in ("accuracy_matrix", "final_average_accuracy", "forgetting", "bwt", "fwt", "memory", "timings",
                "recipe", "average_incremental_accuracy"):
        assert key in data, key
    assert set(data["accuracy_matrix"]) == {"class_il", "task_il"}
    assert len(data["accuracy_matrix"]["class_il"]) == 5 and len(data["accuracy_matrix"]["class_il"][0]) == 5
    # Class-IL: before a task's classes are seen, its accuracy is exactly 0 (logits of unseen classes masked).
    assert data["accuracy_matrix"]["class_il"][0][1:] == [0.0, 0.0, 0.0, 0.0]
    # Class-IL FWT is undefined when unseen classes are masked (R[j-1][j] = 0 by construction): null.
    assert data["fwt"]["class_il"] is None and isinstance(data["fwt"]["task_il"], float)
    assert data["learned_at"] == [0, 1, 2, 3, 4]
    sizes = data["test_sizes"]
    last = data["accuracy_matrix"]["class_il"][-1]
    assert data["final_weighted_accuracy"]["class_il"] == pytest.approx(
        sum(a * n for a, n in zip(last, sizes)) / sum(sizes))
    replay = json.loads((run / "replay" / "results.json").read_text())
    mem = replay["memory"]
    assert mem["exemplars"] == 100 and mem["memo"]["bytes_per_exemplar"] == 64 and not mem["all_data"]
    # stored: float32 inputs as held; MEMO: uint8 pixels per exemplar, parameters x 4 with and without the head
    assert mem["stored"]["exemplar_bytes"] == 100 * 64 * 4
    head = 128 * 10 + 10
    assert mem["backbone_parameters"] == mem["model_parameters"] - head
    assert mem["memo"]["with_head"]["exemplar_equivalents"] == pytest.approx((mem["model_parameters"] * 4 + 6400) / 64)
    assert mem["memo"]["backbone"]["total_bytes"] == mem["backbone_parameters"] * 4 + 6400
    joint = json.loads((run / "joint" / "results.json").read_text())
    assert joint["memory"]["all_data"] and joint["memory"]["exemplars"] == sum(
        t["sizes"]["train"] for t in combined_stream(run)["tasks"])
    for method in ("finetune", "replay", "joint"):
        assert_metrics_recompute(json.loads((run / method / "results.json").read_text()))
    assert (run / "finetune" / "accuracy_matrix.png").read_bytes()[:4] == b"\x89PNG"
    combined = json.loads((run / "results.json").read_text())
    assert set(combined["methods"]) == {"finetune", "replay", "joint"}
    assert combined["recipe"]["stream"]["dataset"] == "digits"


def combined_stream(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())["stream"]


def test_a_run_pushes_final_models_tagged(demo_run):
    out, results = demo_run
    reg = LocalRegistry(out / "reg")
    cards = reg.find()
    assert sorted(c.name for c in cards) == ["demo-finetune-s4", "demo-joint-s4", "demo-replay-s4"]
    last = reg.card("demo/finetune:final")
    assert last.name == "demo-finetune-s4" and last.task_ids == [0, 1, 2, 3, 4] and last.method == "finetune"
    assert reg.tags() == {f"demo/{m}:final": reg.card(f"demo-{m}-s4").id for m in ("finetune", "replay", "joint")}
    stage = results["methods"]["finetune"]["stages"][4]
    assert stage["expert"]["id"] == last.id and results["methods"]["finetune"]["stages"][3]["expert"] is None
    assert results["methods"]["finetune"]["registry"]["pushed"] == 1
    assert last.metrics["test_class_il_accuracy"] == pytest.approx(
        results["methods"]["finetune"]["final_average_accuracy"]["class_il"])


def test_push_stages_pushes_every_snapshot_with_lineage_and_none_pushes_nothing(tmp_path):
    recipe = load_recipe(_small_recipe(tmp_path, epochs=1))
    recipe.methods = recipe.methods[:1]  # finetune
    run_recipe(recipe, RunOptions(out=tmp_path / "run", registry=str(tmp_path / "reg"), progress=False, push="stages"))
    reg = LocalRegistry(tmp_path / "reg")
    assert len(reg.find()) == 5
    last = reg.card("demo/finetune:final")
    assert last.name == "demo-finetune-s4" and last.base.id == reg.card("demo-finetune-s3").id
    code, _, err = zoo("run", str(_small_recipe(tmp_path, epochs=1)), "--out", str(tmp_path / "none"),
                       "--registry", str(tmp_path / "reg2"), "--push", "none", "-q")
    assert code == 0, err
    assert not (tmp_path / "reg2").exists()


def test_zoo_eval_matches_the_run(demo_run):
    out, results = demo_run
    code, stdout, err = zoo("eval", "demo-replay-s4", "--recipe", str(DEMO), "--registry", str(out / "reg"), "--json")
    assert code == 0, err
    report = json.loads(stdout)
    row = results["methods"]["replay"]["accuracy_matrix"]["class_il"][-1]
    assert [t["class_il"] for t in report["tasks"]] == pytest.approx(row)
    assert report["average"]["class_il"] == pytest.approx(results["methods"]["replay"]["final_average_accuracy"]["class_il"])


def _small_recipe(tmp_path: Path, **training) -> Path:
    text = DEMO.read_text()
    path = tmp_path / "small.yaml"
    path.write_text(text.replace("epochs: 30", f"epochs: {training.get('epochs', 5)}"))
    return path


def test_resume_after_interruption(tmp_path, monkeypatch):
    from tests.helpers import interrupt_and_resume
    from zoo.methods import baselines

    recipe = load_recipe(_small_recipe(tmp_path))
    straight, resumed = interrupt_and_resume(recipe, baselines.Replay, 2, tmp_path, monkeypatch)
    assert resumed["trained_on_resume"] == [2, 3, 4]  # stages 0 and 1 of replay came from their checkpoints
    assert "replay: stage 1 restored" in (tmp_path / "resumed" / "run.log").read_text()
    for method in ("finetune", "replay", "joint"):
        assert resumed["methods"][method]["accuracy_matrix"] == straight["methods"][method]["accuracy_matrix"]


def test_rerun_with_a_different_recipe_is_refused(tmp_path):
    path = _small_recipe(tmp_path, epochs=1)
    run_recipe(load_recipe(path), RunOptions(out=tmp_path / "run", registry="none", progress=False))
    code, _, err = zoo("run", str(path), "--out", str(tmp_path / "run"), "--set", "training.epochs=2",
                       "--registry", "none")
    assert code == 1 and "holds a run of a different recipe" in err


# --- recipe validation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("training:", "trainig:"), "unknown key 'trainig' (did you mean 'training'?)"),
    (lambda t: t.replace("lr: 0.001", "lr: fast"), "training.lr must be a number, got a string"),
    (lambda t: t.replace("epochs: 30", "epochs: 2.5"), "training.epochs must be an integer"),
    (lambda t: t.replace("architecture: mlp", "architecture: nosuchnet"), "unknown architecture 'nosuchnet'"),
    (lambda t: t.replace("  - joint", "  - magic"), "unknown method 'magic'"),
    (lambda t: t.replace("memory_size: 100", "memory_sise: 100"), "unknown key 'methods[1].memory_sise'"),
    (lambda t: t.replace("optimizer: adam", "optimizer: adagrad"), "training.optimizer must be one of"),
    (lambda t: t.replace("dataset: digits", "dataset: cifar11"), "cifar11"),
    (lambda t: t.replace("name: demo", "name: [demo"), "not valid YAML"),
])
def test_bad_recipes_give_one_line_errors(tmp_path, edit, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit(DEMO.read_text()))
    code, _, err = zoo("run", str(bad), "--out", str(tmp_path / "out"), "--registry", "none")
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("zoo: error: ") and message in err, err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_dry_run_prints_resolved_recipe(tmp_path):
    code, out, err = zoo("run", str(DEMO), "--dry-run", "--set", "training.epochs=3")
    assert code == 0, err
    assert "epochs: 3" in out and "val_fraction: 0.1" in out and "memory_size: 100" in out


def test_missing_recipe_file(tmp_path):
    code, _, err = zoo("run", str(tmp_path / "nope.yaml"))
    assert code == 1 and "no such file" in err


def test_missing_dataset_names_the_folder(tmp_path):
    recipe = tmp_path / "cifar.yaml"
    recipe.write_text(DEMO.read_text().replace("dataset: digits", f"dataset: cifar10\n  data_root: {tmp_path / 'data'}"))
    code, _, err = zoo("run", str(recipe), "--out", str(tmp_path / "out"), "--registry", "none")
    assert code == 1 and err.count("\n") == 1 and err.startswith("zoo: error: ")
    assert str(tmp_path / "data") in err and "download" in err, err


def test_split_fashion_mnist_joint_and_forgetting(tmp_path):
    """Split-Fashion-MNIST (5 x 2), shortened: joint >= 0.80 class-IL, finetune forgets."""
    from zoo.data import DataNotFoundError

    recipe = load_recipe(ROOT / "recipes" / "split-fashion-mnist.yaml", {"training.epochs": 2})
    recipe.methods = [m for m in recipe.methods if m.method in ("finetune", "joint")]
    try:
        results = run_recipe(recipe, RunOptions(out=tmp_path / "run", registry="none", progress=False))
    except DataNotFoundError as e:
        pytest.skip(f"Fashion-MNIST not installed here: {e}")
    joint, finetune = results["methods"]["joint"], results["methods"]["finetune"]
    assert joint["final_average_accuracy"]["class_il"] >= 0.80
    assert finetune["final_average_accuracy"]["class_il"] < 0.3 and finetune["forgetting"]["class_il"] > 0.8


def _plain_pytorch_final_class_il(stream, method: str, seed: int) -> float:
    """An independent plain-PyTorch run on the demo's stream (same splits, MLP, Adam 1e-3, batch 32, 30 fixed
    epochs, last weights): the final class-IL average accuracy of finetune or joint."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                          nn.Linear(128, 10))
    gen = torch.Generator().manual_seed(seed)
    for t in range(len(stream.tasks)):
        seen = torch.tensor(stream.seen_classes(t))
        mask = torch.full((10,), float("-inf"))
        mask[seen] = 0.0
        if method == "joint":
            torch.manual_seed(seed)
            model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                                  nn.Linear(128, 10))
            x = torch.cat([k.train.x for k in stream.tasks[: t + 1]])
            y = torch.cat([k.train.y for k in stream.tasks[: t + 1]])
        else:
            x, y = stream.tasks[t].train.x, stream.tasks[t].train.y
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(30):
            for idx in torch.randperm(len(y), generator=gen).split(32):
                loss = nn.functional.cross_entropy(model(x[idx]) + mask, y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    mask = torch.full((10,), float("-inf"))
    mask[torch.tensor(stream.seen_classes(len(stream.tasks) - 1))] = 0.0
    with torch.no_grad():
        accs = [float(((model(k.test.x) + mask).argmax(1) == k.test.y).float().mean()) for k in stream.tasks]
    return sum(accs) / len(accs)


def test_baselines_match_an_independent_plain_pytorch_run(demo_run):
    """The demo's finetune and joint agree (within 0.02) with a hand-written 30-epoch PyTorch loop on the same
    stream: the training protocol (fixed epochs, last weights, no test data) is what a peer would run."""
    from zoo.data import build_stream

    _, results = demo_run
    stream = build_stream(load_recipe(DEMO).stream)
    for method in ("finetune", "joint"):
        plain = _plain_pytorch_final_class_il(stream, method, seed=0)
        ours = results["methods"][method]["final_average_accuracy"]["class_il"]
        assert abs(ours - plain) <= 0.02, (method, ours, plain)


def test_set_addresses_list_items_by_index_and_by_label(tmp_path):
    code, out, err = zoo("run", str(DEMO), "--dry-run", "--set", "methods.1.memory_size=50",
                         "--set", "methods.finetune.loss_classes=task")
    assert code == 0, err
    import yaml

    methods = yaml.safe_load(out)["methods"]
    assert methods[1]["memory_size"] == 50 and methods[0]["loss_classes"] == "task"
    for bad, message in (("methods.7.memory_size=1", "index 7 is out of range"),
                         ("methods.nope.memory_size=1", "no item 'nope'"),
                         ("seed.x=1", "the parent of 'x' is not a mapping"), ("seed.x.y=1", "neither a mapping nor a list")):
        code, _, err = zoo("run", str(DEMO), "--dry-run", "--set", bad)
        assert code != 0 and message in err and err.count("\n") == 1, err


def test_early_stopping_validates_on_memory_too_and_ties_go_to_the_later_epoch(tmp_path, monkeypatch):
    """With patience on, replay's validation split holds the task's validation data *and* a held-out part
    of its memory (every class it may use), and that part is never replayed."""
    import torch

    from zoo.methods import baselines
    from zoo.train import EarlyStopping

    seen_val: list = []
    real_fit = baselines.fit

    def spy(model, train, val, cfg, **kw):
        seen_val.append(sorted(set(val.y.tolist())))
        return real_fit(model, train, val, cfg, **kw)

    monkeypatch.setattr(baselines, "fit", spy)
    recipe = load_recipe(DEMO, {"training.epochs": 3, "training.patience": 1, "training.restore_best": True})
    recipe.methods = [m for m in recipe.methods if m.method == "replay"]
    results = run_recipe(recipe, RunOptions(out=tmp_path / "run", registry="none", progress=False))
    stream_classes = [t["classes"] for t in results["stream"]["tasks"]]
    for t, classes in enumerate(seen_val):
        assert classes == sorted(c for k in stream_classes[: t + 1] for c in k), (t, classes)
    assert results["methods"]["replay"]["params"]["val_fraction"] == 0.1

    stop = EarlyStopping("max", patience=None)
    model = torch.nn.Linear(1, 1)
    for epoch, score in enumerate([0.5, 0.7, 0.7, 0.6]):
        stop.step(score, epoch, model)
    assert stop.best_epoch == 2  # the tie at 0.7 goes to the later epoch
