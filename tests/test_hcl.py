"""HCL: architecture streams in recipes, fresh students on a change with the previous model as teacher,
Quick Deep Inversion's feature statistics (BatchNorm or frozen outputs), and the four variants on digits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.test_cli import zoo

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "hcl-digits.yaml"


def test_an_architecture_stream_needs_a_method_that_can_change_architecture():
    code, _, err = zoo("run", str(ROOT / "recipes" / "demo.yaml"), "--dry-run", "--set",
                       "model={0: {architecture: mlp, args: {in_features: 64}}, 2: {architecture: resmlp, args: {in_features: 64}}}")
    assert code != 0 and "cannot change architecture" in err and err.count("\n") == 1, err
    for bad, message in (("model=[]", "empty"), ("model={1: {architecture: mlp}}", "task 0"),
                         ("model=[{architecture: mlp}, {architecture: nope}]", "unknown architecture")):
        code, _, err = zoo("run", str(RECIPE), "--dry-run", "--set", bad)
        assert code != 0 and message in err, err
    code, out, err = zoo("run", str(RECIPE), "--dry-run")
    assert code == 0 and "resmlp" in out, err


def test_recipe_stream_forms_resolve_the_same():
    from zoo.recipe import load_recipe, parse_recipe
    import yaml

    recipe = load_recipe(RECIPE)
    assert [recipe.model_at(t).architecture for t in range(5)] == ["mlp", "mlp", "resmlp", "resmlp", "mlp"]
    again = parse_recipe(yaml.safe_load(yaml.safe_dump(recipe.to_data())))
    assert again.model_changes == recipe.model_changes and again.model == recipe.model


def test_a_change_gives_a_fresh_student_taught_by_the_previous_model(tmp_path, monkeypatch):
    from zoo.methods import hcl
    from zoo.recipe import load_recipe
    from zoo.runner import RunOptions, run_recipe

    calls = []
    real_fit = hcl.fit

    def spy(model, train, val, cfg, **kw):
        start = {k: v.clone() for k, v in model.state_dict().items()}
        extra = kw.get("extra_loss")
        cells = dict(zip(extra.__code__.co_freevars, (c.cell_contents for c in extra.__closure__))) if extra else {}
        teacher = cells.get("teacher")
        r = real_fit(model, train, val, cfg, **kw)
        calls.append({"arch": model.zoo_config.architecture, "start": start, "model": model,
                      "end": {k: v.clone() for k, v in model.state_dict().items()},
                      "teacher": {k: v.clone() for k, v in teacher.state_dict().items()} if teacher is not None else None})
        return r

    monkeypatch.setattr(hcl, "fit", spy)
    recipe = load_recipe(RECIPE, {"training.epochs": 2})
    recipe.methods = [m for m in recipe.methods if m.key == "distil"]
    results = run_recipe(recipe, RunOptions(out=tmp_path / "run", registry="none", progress=False))
    assert [c["arch"] for c in calls] == ["mlp", "mlp", "resmlp", "resmlp", "mlp"]
    infos = [s["info"] for s in results["methods"]["distil"]["stages"]]
    assert [i["changed"] for i in infos] == [False, False, True, False, True]
    for t in range(1, 5):
        # the teacher is the previous stage's selected (here: last) weights
        prev_end, teacher = calls[t - 1]["end"], calls[t]["teacher"]
        assert set(teacher) == set(prev_end) and all(torch.equal(teacher[k], prev_end[k]) for k in teacher)
    # on a change the student starts from fresh weights of the new architecture, not from the teacher's
    from zoo.models import create_model

    torch.manual_seed(recipe.seed * 1000 + 2)
    fresh = create_model("resmlp", 10, **recipe.model_at(2).args).state_dict()
    assert all(torch.equal(calls[2]["start"][k], fresh[k]) for k in fresh)
    # without a change the student keeps training from where it was
    assert all(torch.equal(calls[3]["start"][k], calls[2]["end"][k]) for k in calls[3]["start"])


def test_qdi_feature_statistics_bn_running_or_frozen_outputs():
    from zoo.synthetic import QDIConfig, quick_deep_inversion

    torch.manual_seed(0)
    current = torch.randn(300, 1, 8, 8) * 2 + 1
    bn_net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 6))
    cfg = QDIConfig(samples=16, steps=3, warmup=1)
    x, y, prior = quick_deep_inversion(bn_net, current, [0, 1, 2], cfg, torch.Generator().manual_seed(0))
    assert prior.mode == "bn" and prior.reference is None and x.shape == (16, 1, 8, 8)
    assert sorted(set(y.tolist())) == [0, 1, 2] and torch.bincount(y).tolist()[:3] == [6, 5, 5]
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(inplace=True), nn.Linear(12, 6))
    x, y, prior = quick_deep_inversion(mlp, current, [3, 4], cfg, torch.Generator().manual_seed(0))
    assert prior.mode == "outputs" and len(prior.reference) == 2
    with torch.no_grad():
        h = mlp[1](current.flatten(1)[:256])
    assert torch.allclose(prior.reference[0][0], h.mean(0), atol=1e-6)
    assert torch.allclose(prior.reference[0][1], h.var(0, unbiased=False), atol=1e-6)


def test_the_four_variants_run_on_digits(tmp_path):
    from tests.helpers import assert_metrics_recompute
    from zoo.recipe import load_recipe
    from zoo.runner import RunOptions, run_recipe

    recipe = load_recipe(RECIPE, {"training.epochs": 10})
    for m in recipe.methods:
        m.params.qdi.steps = 30
    results = run_recipe(recipe, RunOptions(out=tmp_path / "run", registry=str(tmp_path / "reg"), progress=False))
    acc = {k: m["final_average_accuracy"]["class_il"] for k, m in results["methods"].items()}
    assert acc["finetune"] < 0.3 and acc["distilbuf"] > 2 * acc["finetune"]
    for m in results["methods"].values():
        assert_metrics_recompute(m)
    qdi = results["methods"]["qdi"]["stages"]
    assert qdi[0]["info"].get("qdi") is None and qdi[1]["info"]["qdi"]["r_feat"] == "outputs"  # an MLP teacher
    from registry import LocalRegistry

    reg = LocalRegistry(tmp_path / "reg")
    card = reg.card("hcl-digits-qdi-s3")
    assert card.architecture == "resmlp" and card.buffer["num_samples"] == 200
    assert reg.get(card.id).buffer()["x"].shape == (200, 64)
