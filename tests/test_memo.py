"""MEMO and DER: the expandable model (copied blocks, frozen old blocks and BatchNorm, weight aligning, one
code path for both splits), saving it to the registry, memory-aligned budgets in recipes and budget sweeps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from tests.test_cli import zoo

ROOT = Path(__file__).resolve().parents[1]
CONV = {"in_chans": 1, "width": 8, "img_size": 8}

RECIPE = {
    "name": "memo-test", "seed": 0, "device": "cpu",
    "stream": {"dataset": "digits", "scenario": "split", "n_tasks": 5, "val_fraction": 0.1, "flatten": False},
    "model": {"architecture": "convnet", "args": CONV},
    "training": {"epochs": 3, "batch_size": 32, "optimizer": "sgd", "lr": 0.05, "weight_decay": 0.0005},
    "methods": [{"method": "memo", "memory_size": 60}],
}


def _recipe(**changes):
    from zoo.recipe import parse_recipe

    data = json.loads(json.dumps(RECIPE))
    data.update(changes)
    return parse_recipe(data)


def _method(name: str = "memo", **params):
    """A memo/der method on the test recipe's stream, as the runner builds it."""
    from zoo.data import build_stream
    from zoo.methods import RunContext, get_method
    from zoo.models import create_model
    from zoo.recipe import method_training
    from zoo.schema import parse
    from zoo.train import seed_everything

    recipe = _recipe()
    stream = build_stream(recipe.stream)
    seed_everything(0)
    cls = get_method(name)
    ctx = RunContext(stream=stream, new_model=lambda: create_model("convnet", stream.num_classes, **CONV),
                     training=method_training(recipe, recipe.methods[0]), device=torch.device("cpu"), seed=0,
                     progress=False, architecture="convnet", model_args=dict(CONV))
    return cls(parse(cls.Params, {"memory_size": 60, **params}, "memo"), ctx)


def _clone(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_a_new_specialized_block_starts_as_a_copy_and_the_head_keeps_old_rows():
    from zoo.models import create_model

    torch.manual_seed(0)
    model = create_model("expandable", 10, base="convnet", base_args=CONV)
    with torch.no_grad():  # make block 0 and the head differ from any fresh initialisation
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model.specialized[0][1].running_mean.add_(3.0)
    head = model.head.weight.detach().clone()
    before = _clone(model.specialized[0])
    model.add_block(old_classes=[0, 1, 2])
    assert len(model.specialized) == 2 and model.zoo_config.model_args["blocks"] == 2
    assert model.specialized[1] is not model.specialized[0]
    copy = model.specialized[1].state_dict()
    assert all(torch.equal(copy[k], v) for k, v in before.items())  # weights and BN statistics, copied
    assert model.head.in_features == 2 * model.block_features
    assert torch.equal(model.head.weight[[0, 1, 2], : model.block_features], head[[0, 1, 2]])
    assert not torch.equal(model.head.weight[3, : model.block_features], head[3])  # a new class starts fresh


@pytest.mark.parametrize("train_base", [True, False])
def test_old_blocks_and_their_batchnorm_do_not_change_during_a_later_task(train_base):
    method = _method(train_base=train_base)
    method.train_stage(0)
    block0 = _clone(method.model.specialized[0])
    shared = _clone(method.model.generalized)
    assert any("running_mean" in k for k in block0)
    method.train_stage(1)
    model = method.model
    after = model.specialized[0].state_dict()
    assert all(torch.equal(after[k], v) for k, v in block0.items()), "an old block (or its BN statistics) moved"
    moved = any(not torch.equal(model.generalized.state_dict()[k], v) for k, v in shared.items())
    assert moved == train_base  # the generalized blocks train only with train_base
    new = model.specialized[1].state_dict()
    assert any(not torch.equal(new[k], block0[k]) for k in block0)  # the new block did learn
    model.train()
    assert not model.specialized[0].training and model.specialized[1].training
    assert model.generalized.training == train_base
    assert not hasattr(model, "aux")  # the auxiliary head is dropped after training


def test_weight_aligning_makes_the_mean_norms_equal():
    from zoo.models import create_model

    torch.manual_seed(1)
    model = create_model("expandable", 6, base="mlp", base_args={"in_features": 8, "hidden": 16}, blocks=2)
    with torch.no_grad():
        model.head.weight[4:] *= 3.0  # new classes with larger rows, as class imbalance leaves them
    old, new = [0, 1, 2, 3], [4, 5]
    gamma = model.weight_align(old, new)
    w = model.head.weight.detach()
    assert gamma < 1
    assert float(w[new].norm(dim=1).mean()) == pytest.approx(float(w[old].norm(dim=1).mean()), rel=1e-6)


def test_der_and_memo_differ_only_in_the_split():
    from zoo.methods.memo import Der, Memo
    from zoo.models import create_model

    assert Der.__mro__[1] is Memo
    assert set(vars(Der)) - {"__module__", "__doc__", "__qualname__", "split", "name", "_abc_impl",
                             "__abstractmethods__"} == set()
    torch.manual_seed(0)
    memo = create_model("expandable", 10, base="convnet", base_args=CONV, split="memo")
    torch.manual_seed(0)
    der = create_model("expandable", 10, base="convnet", base_args=CONV, split="der")
    base = create_model("convnet", 0, **CONV)
    assert sum(p.numel() for p in der.generalized.parameters()) == 0  # DER shares nothing
    memo_shapes = [p.shape for p in memo.generalized.parameters()] + [p.shape for p in memo.specialized[0].parameters()]
    assert memo_shapes == [p.shape for p in der.specialized[0].parameters()] == [p.shape for p in base.body.parameters()]
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():  # the same weights through either split give the same features
        der.specialized[0].load_state_dict(
            dict(zip(der.specialized[0].state_dict(),
                     list(memo.generalized.state_dict().values()) + list(memo.specialized[0].state_dict().values()))))
        assert torch.allclose(memo.eval().features(x), der.eval().features(x))


def test_the_expandable_model_round_trips_through_the_registry(tmp_path):
    from registry import open_registry

    method = _method("memo")
    for t in range(3):
        method.train_stage(t)
    method.model.add_block(method.ctx.stream.seen_classes(2))  # blocks are what the config must count
    reg = open_registry(str(tmp_path / "reg"))
    card = reg.save(method.expert(), name="memo-test", tasks=[], method="memo")
    expert = reg.get(card.id)
    config = json.loads((expert.path / "config.json").read_text())
    assert config["architecture"] == "expandable" and config["model_args"]["blocks"] == 4
    assert config["model_args"]["base"] == "convnet" and config["model_args"]["split"] == "memo"
    loaded = expert.model()
    assert loaded.zoo_config.model_args["blocks"] == 4 and len(loaded.specialized) == 4
    x = method.ctx.stream.tasks[0].test.x
    assert torch.equal(loaded.eval()(x), method.model.eval()(x))


def test_memo_resumes_exactly(tmp_path, monkeypatch):
    from tests.helpers import interrupt_and_resume
    from zoo.methods import memo

    recipe = _recipe(methods=[{"method": "memo", "memory_size": 60}, {"method": "der", "memory_size": 60}])
    straight, resumed = interrupt_and_resume(recipe, memo.Memo, 2, tmp_path, monkeypatch)
    assert resumed["trained_on_resume"] == [2, 3, 4, 0, 1, 2, 3, 4]  # memo resumed at 2; der had not started
    for key in ("memo", "der"):
        assert straight["methods"][key]["accuracy_matrix"] == resumed["methods"][key]["accuracy_matrix"]


def test_memory_is_herded_under_a_fixed_budget():
    method = _method("der")
    method.train_stage(0)
    kept = method.memory_buffer.per_class
    assert sorted(kept) == [0, 1] and all(len(x) == 30 for x in kept.values())  # 60 // 2 classes
    first = {c: x.clone() for c, x in kept.items()}
    method.train_stage(1)
    kept = method.memory_buffer.per_class
    assert sorted(kept) == [0, 1, 2, 3] and all(len(x) == 15 for x in kept.values())
    assert all(torch.equal(kept[c], first[c][:15]) for c in first)  # old classes keep their first picks
    assert method.memory()["exemplars"] == 60
    method.params.memory_size = 1000  # a quota above what a class has: the class keeps all it has
    method.train_stage(2)
    task = method.ctx.stream.tasks[2]
    for c in task.classes:
        assert len(method.memory_buffer.per_class[c]) == int((task.train.y == c).sum()) < 1000 // 6


def test_memo_refuses_validation_that_steers_training():
    from zoo.schema import RecipeError

    with pytest.raises(RecipeError, match="configured epochs"):
        from zoo.data import build_stream
        from zoo.methods import RunContext
        from zoo.methods.memo import Memo, MemoParams
        from zoo.train import TrainConfig

        stream = build_stream(_recipe().stream)
        Memo(MemoParams(), RunContext(stream=stream, new_model=None, training=TrainConfig(patience=2),
                                      device=torch.device("cpu"), seed=0, architecture="convnet", model_args=CONV))


def test_bad_expandable_configs_are_clear_errors():
    from registry.errors import ModelArgsError
    from zoo.models import create_model

    for kwargs, message in (({"base": "resnet18"}, "no sequential body"), ({"split": "half"}, "split"),
                            ({"base": "expandable"}, "cannot expand"), ({"base": "lenet5"}, "declares no"),
                            ({"base_args": {"checkpoint_path": "/x"}}, "no argument")):
        with pytest.raises(ModelArgsError, match=message):
            create_model("expandable", 10, **kwargs)
    from zoo.models import validate_model_args

    with pytest.raises(ModelArgsError):  # nested mappings only where a constructor takes one
        validate_model_args("mlp", {"hidden": {"a": 1}})


# --- budgets -----------------------------------------------------------------------------------------------------

def test_a_budget_derives_each_methods_exemplars_from_its_model_cost(tmp_path):
    from zoo.budget import model_cost
    from zoo.runner import RunOptions, run_recipe

    recipe = _recipe(budget={"exemplars": 30}, training={**RECIPE["training"], "epochs": 1},
                     methods=["finetune", "replay", "der", "memo"])
    results = run_recipe(recipe, RunOptions(out=tmp_path / "run", registry="none", progress=False))
    plan = results["budget"]
    cost = model_cost("convnet", 10, **CONV)
    e, T = 64, 5
    assert plan["bytes_per_exemplar"] == e and plan["total_bytes"] == 30 * e + T * cost.backbone * 4
    m = plan["methods"]
    assert m["replay"]["exemplars"] == 30 + math.floor((T - 1) * cost.backbone * 4 / e)
    assert m["memo"]["exemplars"] == 30 + math.floor((T * cost.backbone - (cost.generalized + T * cost.specialized)) * 4 / e)
    assert m["der"]["exemplars"] == 30 and not m["finetune"]["applies"]
    for key in ("replay", "der", "memo"):
        r = results["methods"][key]
        assert r["params"]["memory_size"] == m[key]["exemplars"]
        assert r["memory"]["exemplars"] <= m[key]["exemplars"]
        # what the method holds at the end is what the budget charged it for (up to the floor)
        assert r["memory"]["memo"]["backbone"]["model_bytes"] == m[key]["model_bytes"]
        assert 0 <= plan["total_bytes"] - m[key]["total_bytes"] < e
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "floor(" in saved["budget"]["methods"]["memo"]["derivation"]


def test_budget_errors_name_the_problem(tmp_path):
    path = tmp_path / "r.yaml"
    cases = (
        ({"budget": {"exemplars": 30}, "methods": [{"method": "memo", "memory_size": 60}]}, "memory_size"),
        ({"budget": {"exemplars": 30, "bytes": 100}}, "exactly one"),
        ({"budget": {}}, "exactly one"),
        ({"budget": {"bytes": 100, "backbones": 2}}, "backbones goes with"),
        ({"budget": {"exemplars": -1}}, ">= 0"),
        ({"budget": {"exemplars": 30, "sweep": [10, 2.5]}}, "whole number"),
        ({"budget": {"megabytes": 0.001}}, "more than the budget"),
    )
    for changes, message in cases:
        data = {**RECIPE, "methods": ["memo"], **changes}
        path.write_text(yaml.safe_dump(data))
        code, _, err = zoo("run", str(path), "--out", str(tmp_path / "out"), "--registry", "none")
        assert code != 0 and message in err and err.count("\n") == 1 and "internal error" not in err, (changes, err)
        assert not (tmp_path / "out").exists()  # checked before anything was written
    path.write_text(yaml.safe_dump(RECIPE))
    code, _, err = zoo("run", str(path), "--budgets", "10,x", "--dry-run")
    assert code != 0 and "--budgets" in err, err


def test_a_budget_sweep_writes_curves_and_aucs(tmp_path):
    path = tmp_path / "r.yaml"
    data = {**RECIPE, "training": {**RECIPE["training"], "epochs": 1}, "budget": {"exemplars": 10},
            "methods": ["replay", "memo", "finetune"]}
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "sweep"
    code, stdout, err = zoo("-q", "run", str(path), "--out", str(out), "--registry", "none", "--budgets", "10,40")
    assert code == 0, err
    summary = json.loads((out / "sweep.json").read_text())
    assert (out / "sweep.png").stat().st_size > 0 and (out / "sweep.svg").exists()
    assert summary["budgets"] == [10, 40] and set(summary["methods"]) == {"replay", "memo"}
    assert "finetune" in summary["not_swept"]
    for key, curve in summary["methods"].items():
        pts = curve["points"]
        assert [p["budget"] for p in pts] == [10, 40]
        runs = [json.loads((out / f"budget-{b}" / "results.json").read_text())["methods"][key] for b in (10, 40)]
        assert [r["budget"]["exemplars"] for r in runs] == [runs[0]["budget"]["exemplars"] + k * 30 for k in (0, 1)]
        assert all(p["exemplars"] <= r["budget"]["exemplars"] for p, r in zip(pts, runs))
        mb = [p["megabytes"] for p in pts]
        run = runs[1]
        assert pts[1]["last_accuracy"] == run["final_average_accuracy"]["class_il"]
        expected = (mb[1] - mb[0]) * 100 * (pts[0]["average_accuracy"] + pts[1]["average_accuracy"]) / 2
        assert curve["auc_a"] == pytest.approx(expected)
    assert "AUC-A" in stdout and "memo" in stdout


def test_the_memo_recipes_validate():
    for name in ("memo-split-fashion-mnist.yaml", "memo-cifar100.yaml"):
        code, out, err = zoo("run", str(ROOT / "recipes" / name), "--dry-run")
        assert code == 0 and "memo" in out and "budget" in out, err


def test_sweep_points_obey_the_budget_rules_and_keep_exact_labels():
    from zoo.schema import RecipeError
    from zoo.sweep import budget_label, sweep_recipes

    recipe = _recipe()  # memo sets memory_size: 60 itself, so a budget sweep must refuse it
    with pytest.raises(RecipeError, match="memory_size"):
        sweep_recipes(recipe, [10, 20])
    assert budget_label(12345678) != budget_label(12345679) and budget_label(2.5) == "2.5"
    assert budget_label(2000.0) == "2000"
