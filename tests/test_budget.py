"""MEMO's memory accounting: exact parameter counts, exemplar costs and memory-aligned budgets (`zoo budget`)."""

from __future__ import annotations

import json

import pytest

from tests.test_cli import zoo
from zoo.budget import aligned_budgets, budget_report, model_cost


def test_the_cifar100_figures_of_the_paper():
    r = budget_report("resnet32", (3, 32, 32), 100, 10)
    p = r["parameters"]
    assert (p["backbone"], p["generalized"], p["specialized"]) == (463_504, 112_016, 351_488)
    assert r["exemplar_bytes"] == 3072 and r["model_in_exemplars"]["backbone"] == pytest.approx(603.52, abs=0.005)
    assert r["single_backbone"]["backbone"] == 7_431 and r["memo"]["exemplars"] == 3_312  # B0 Inc10
    r20 = budget_report("resnet32", (3, 32, 32), 100, 20)
    assert r20["memo"]["exemplars"] == 4_771 and r20["single_backbone"]["backbone"] == 13_466  # B0 Inc5
    assert r["der"] == {"exemplars": 2000, "backbones": 10, "bytes": 2000 * 3072 + 10 * 463_504 * 4}


def test_resnet18_at_imagenet_resolution():
    cost = model_cost("resnet18", 1000)
    assert cost.backbone == 11_176_512 and cost.generalized + cost.specialized == cost.backbone
    assert cost.backbone * 4 / (224 * 224 * 3) == pytest.approx(297.0, abs=0.01)


@pytest.mark.parametrize("arch, args", [("wrn16_4", {}), ("reduced_resnet18", {}), ("resnet32", {})])
def test_declared_splits_cover_the_backbone(arch, args):
    cost = model_cost(arch, 10, **args)
    assert cost.specialized > 0 and cost.generalized > 0 and cost.generalized + cost.specialized == cost.backbone


def test_equal_memory_is_what_the_budgets_mean():
    cost = model_cost("resnet32", 100)
    b = aligned_budgets(cost, 10, 3072)
    der = b["der"]["bytes"]
    single = cost.backbone * 4 + b["single_backbone"]["backbone"] * 3072
    memo = (cost.generalized + 10 * cost.specialized) * 4 + b["memo"]["exemplars"] * 3072
    assert 0 <= der - single < 3072 and 0 <= der - memo < 3072  # equal up to one exemplar (the floor)


def test_zoo_budget_cli():
    code, out, err = zoo("budget", "resnet32", "--input-shape", "3,32,32", "--classes", "100", "--tasks", "10", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["memo"]["exemplars"] == 3312 and report["single_backbone"]["backbone"] == 7431
    code, out, _ = zoo("budget", "resnet32", "--input-shape", "3,32,32", "--classes", "100", "--tasks", "20")
    assert code == 0 and "13,466" in out and "4,771" in out and "603.52" in out
    # the spelling of issue 12's acceptance command
    code, out, _ = zoo("budget", "--arch", "resnet32", "--input", "3x32x32", "--classes", "100", "--tasks", "10",
                       "--exemplars", "2000")
    assert code == 0 and "463,504" in out and "7,431" in out and "3,312" in out and "603.52" in out
    code, out, _ = zoo("budget", "lenet5", "--input-shape", "1,28,28", "--classes", "10", "--tasks", "5")
    assert code == 0 and "no generalized/specialized split" in out
    code, out, _ = zoo("budget", "mlp", "--input-shape", "64", "--classes", "10", "--tasks", "5", "--arg",
                       "in_features=64", "--arg", "depth=3", "--json")
    split = json.loads(out)["parameters"]  # the split follows the depth: the last hidden layer is specialized
    assert (split["generalized"], split["specialized"]) == (64 * 256 + 256 + 256 * 256 + 256, 256 * 256 + 256)
    for args, message in ((["nope"], "unknown architecture"), (["mlp", "--arg", "checkpoint_path=/x"], "no argument"),
                          (["resnet32", "--input-shape", "0,3"], "input-shape")):
        full = [*args[:1], "--input-shape", "3,32,32", "--classes", "10", "--tasks", "2", *args[1:]]
        code, _, err = zoo("budget", *full)
        assert code != 0 and message in err and err.count("\n") == 1 and "internal error" not in err, err


def test_herding_picks_the_icarl_order_and_a_class_that_runs_out_stops():
    import torch

    from zoo.herding import herding_order, select_exemplars

    # hand-made 2-d features at angles 0, 10, 50, -60, 90 degrees (normalised)
    angles = torch.tensor([0.0, 10.0, 50.0, -60.0, 90.0]) * torch.pi / 180
    feats = torch.stack([angles.cos(), angles.sin()], 1) * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0])[:, None]
    phi = torch.nn.functional.normalize(feats, dim=1)
    mu = phi.mean(0)  # iCaRL's class mean of the normalised features, not normalised again
    # the iCaRL rule by brute force: the k-th pick minimises |mu - mean(chosen + candidate)|
    expected, chosen = [], []
    for _ in range(5):
        best = min((i for i in range(5) if i not in chosen),
                   key=lambda i: float((mu - (phi[chosen].sum(0) + phi[i]) / (len(chosen) + 1)).norm()))
        chosen.append(best)
    expected = chosen
    assert herding_order(feats, 5).tolist() == expected
    assert herding_order(feats, 2).tolist() == expected[:2]  # a smaller quota keeps the first picks
    # budget 12 over 3 classes: quota 4; class 2 has only 2 samples and keeps 2, without giving its spare away
    labels = torch.tensor([0] * 6 + [1] * 5 + [2] * 2)
    x = torch.randn(13, 4, generator=torch.Generator().manual_seed(0))
    idx, kept = select_exemplars(x, labels, [0, 1, 2], 12)
    assert kept == {0: 4, 1: 4, 2: 2} and len(idx) == 10 and len(set(idx.tolist())) == 10
    assert torch.bincount(labels[idx]).tolist() == [4, 4, 2]
