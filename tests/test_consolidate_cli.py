"""`zoo consolidate`: a base and two BMC experts (with buffers) in a registry, local and on the loopback Hub."""

from __future__ import annotations

import json

import pytest
import torch

from registry import HubRegistry, LocalRegistry, ParentRef
from tests.helpers import snapshot
from tests.test_cli import zoo
from zoo.buffer import build_buffer
from zoo.data import build_stream
from zoo.models import create_model
from zoo.train import TrainConfig, accuracy, class_mask, fit


@pytest.fixture(scope="module")
def digits_registry(tmp_path_factory):
    """A registry with an untrained base and two experts (tasks 0 and 1 of Split-Digits 2 x 5) with buffers."""
    root = tmp_path_factory.mktemp("cons") / "reg"
    reg = LocalRegistry(root)
    stream = build_stream({"dataset": "digits", "scenario": "split", "n_tasks": 2})
    torch.manual_seed(0)
    base = create_model("mlp", 10, in_features=64, hidden=64)
    base_card = reg.save(base, name="base", tasks=[])
    for task in stream.tasks:
        expert = create_model("mlp", 10, in_features=64, hidden=64)
        expert.load_state_dict(base.state_dict())
        fit(expert, task.train, task.val, TrainConfig(epochs=15, batch_size=32), num_classes=10,
            classes=task.classes, progress=False)
        buf = build_buffer(expert, task.train, task.classes, task.id, fraction=1.0, cap=300,
                           generator=torch.Generator().manual_seed(task.id))
        reg.save(expert, name=f"expert-{task.id}", tasks=[(task.id, task.classes)],
                 parents=[ParentRef(base_card.id, base_card.digest, "base")], method="bmc-expert",
                 buffer=buf.tensors(), buffer_info={"task": task.id})
    return reg, stream


def _accuracy(model, stream) -> float:
    mask = class_mask(list(range(10)), 10, torch.device("cpu"))
    return sum(accuracy(model, t.test, mask) for t in stream.tasks) / len(stream.tasks)


def test_consolidate_local(digits_registry):
    reg, stream = digits_registry
    code, out, err = zoo("--quiet", "consolidate", "--base", "base", "--experts", "expert-0", "--experts", "expert-1",
                         "--registry", str(reg.root), "--epochs", "40", "--lr", "0.003", "--as", "base-1",
                         "--tag-as", "base:latest")
    assert code == 0, err
    card = reg.card("base:latest")
    assert card.name == "base-1" and card.method == "bmc-consolidation"
    assert [p.role for p in card.parents] == ["base", "expert", "expert"]
    assert {p.id for p in card.parents} == {reg.card(r).id for r in ("base", "expert-0", "expert-1")}
    assert card.task_ids == [0, 1]
    recipe = card.hyperparameters["recipe"]
    assert recipe["consolidation"]["epochs"] == 40 and recipe["experts"] == [reg.card("expert-0").id, reg.card("expert-1").id]
    # The consolidated base knows both tasks, class-incrementally (argmax over all 10 classes).
    assert _accuracy(reg.get("base-1").model(), stream) > 0.85
    assert _accuracy(reg.get("expert-0").model(), stream) < 0.6  # each expert alone knows half


def test_consolidate_selects_experts_by_task(digits_registry):
    reg, _ = digits_registry
    code, out, err = zoo("--quiet", "consolidate", "--base", "base", "--task", "1", "--trained-with", "bmc-expert",
                         "--registry", str(reg.root),
                         "--epochs", "2", "--as", "only-task-1")
    assert code == 0, err
    assert [p.id for p in reg.card("only-task-1").parents][1:] == [reg.card("expert-1").id]


def test_consolidate_errors(digits_registry):
    reg, _ = digits_registry
    before = snapshot(reg.root)
    code, _, err = zoo("consolidate", "--base", "base", "--experts", "base", "--registry", str(reg.root))
    assert code == 1 and "no experts selected" in err
    code, _, err = zoo("consolidate", "--base", "nope", "--experts", "expert-0", "--registry", str(reg.root))
    assert code == 1 and "no expert 'nope'" in err
    code, _, err = zoo("consolidate", "--base", "base", "--registry", str(reg.root))
    assert code == 2 and "--experts" in err
    # an expert without a buffer (the base itself as memory) is refused by name
    code, _, err = zoo("consolidate", "--base", "base", "--experts", "expert-0", "--memory", "base",
                       "--registry", str(reg.root))
    assert code == 1 and "has no buffer" in err and err.count("\n") == 1
    assert snapshot(reg.root) == before


def test_consolidate_against_the_hub(digits_registry, hub_server, hub_repo):
    reg, stream = digits_registry
    uri = f"hf://{hub_repo}"
    code, _, err = zoo("--quiet", "push", "--to", uri, "--registry", str(reg.root), "--method", "bmc-expert")
    assert code == 0, err
    code, _, err = zoo("--quiet", "push", "--to", uri, "base", "--registry", str(reg.root))
    assert code == 0, err
    code, out, err = zoo("--quiet", "consolidate", "--base", "base", "--experts", "expert-0", "--experts", "expert-1",
                         "--registry", uri, "--epochs", "40", "--lr", "0.003", "--as", "hub-base", "--tag-as",
                         "base:latest")
    assert code == 0, err
    hub = HubRegistry(hub_repo)
    card = hub.card("base:latest")
    assert card.name == "hub-base" and len(card.parents) == 3
    assert _accuracy(hub.get("hub-base").model(), stream) > 0.85
    code, out, _ = zoo("list", "--registry", uri, "--json", "--method", "bmc-consolidation")
    assert [r["name"] for r in json.loads(out)] == ["hub-base"]


@pytest.mark.parametrize("lr", ["1e30", "1e12"])
def test_a_diverging_consolidation_still_leaves_a_healthy_registry(digits_registry, lr):
    """Issue 9: a diverging run (NaN losses) used to store a card the index could not hold and brick the
    registry. Its non-finite metrics are now stored as null and the registry stays whole."""
    reg, _ = digits_registry
    code, _, err = zoo("--quiet", "consolidate", "--base", "base", "--experts", "expert-0", "--registry",
                       str(reg.root), "--epochs", "2", "--lr", lr, "--as", f"diverged-{lr}")
    assert code == 0, err
    again = LocalRegistry(reg.root)
    card = again.card(f"diverged-{lr}")
    assert all(v is None or v == v for v in card.metrics.values())
    assert again.verify() == []
    code, out, _ = zoo("list", "--registry", str(reg.root), "--json")
    assert code == 0 and "NaN" not in out
