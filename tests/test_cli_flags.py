"""Flags that must do what they say (issue 13, section 2): repeatable filters, resume / overwrite / lock,
-q anywhere, push modes and tags, announced tag moves, gc / add / tag messages."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest

from registry import LocalRegistry, MetricFilter, Query
from tests.helpers import make_expert
from tests.test_cli import zoo

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "demo.yaml"


@pytest.fixture
def three(tmp_path):
    root = tmp_path / "reg"
    reg = LocalRegistry(root)
    cards = [reg.add(make_expert(tmp_path / n, name=n, seed=s, tasks=[(t, [2 * t, 2 * t + 1])], num_classes=10))
             for n, s, t in (("a", 1, 0), ("b", 2, 1), ("c", 3, 2))]
    return root, cards


def _ids(out: str) -> list[str]:
    return [r["id"] for r in json.loads(out)]


def test_filters_repeat_or_within_and_across(three):
    root, (a, b, c) = three
    r = ("--registry", str(root), "--json")
    assert _ids(zoo("list", *r, "--task", "0", "--task", "2")[1]) == [a.id, c.id]
    assert _ids(zoo("list", *r, "--name", "a", "--name", "b")[1]) == [a.id, b.id]
    assert _ids(zoo("list", *r, "--task", "0", "--task", "1", "--name", "b")[1]) == [b.id]  # AND across keys
    assert _ids(zoo("list", *r, "--task", "0", "--name", "b")[1]) == []
    assert _ids(zoo("list", *r, "--metric", "accuracy<0.515", "--metric", "accuracy>0.525")[1]) == [a.id, c.id]
    reg = LocalRegistry(root)
    assert [x.id for x in reg.find(Query(task=(1, 2), name=("b", "c", "zz")))] == [b.id, c.id]
    assert [x.id for x in reg.find(Query(metric=(MetricFilter.parse("accuracy>=0.53"),)))] == [c.id]


def test_consolidate_keeps_every_repeated_task(three, monkeypatch):
    root, (a, b, c) = three
    import zoo.consolidate as consolidate

    seen = {}

    class Stop(Exception):
        pass

    def capture(reg, base, experts, *args, **kwargs):
        seen["experts"] = list(experts)
        raise Stop()

    monkeypatch.setattr(consolidate, "consolidate_experts", capture)
    code, _, _ = zoo("consolidate", "--base", "a", "--task", "1", "--task", "2", "--registry", str(root))
    assert sorted(seen["experts"]) == sorted([b.id, c.id])


def test_eval_takes_filters(tmp_path):
    from zoo.recipe import load_recipe
    from zoo.runner import RunOptions, run_recipe

    recipe = load_recipe(DEMO, {"training.epochs": 1, "methods": ["finetune"]})
    run_recipe(recipe, RunOptions(out=tmp_path / "run", registry=str(tmp_path / "reg"), progress=False))
    code, out, err = zoo("eval", "--recipe", str(DEMO), "--registry", str(tmp_path / "reg"), "--method", "finetune",
                         "--json")
    assert code == 0, err
    by_ref = zoo("eval", "demo/finetune:final", "--recipe", str(DEMO), "--registry", str(tmp_path / "reg"), "--json")[1]
    assert json.loads(out) == json.loads(by_ref)
    code, _, err = zoo("eval", "--recipe", str(DEMO), "--registry", str(tmp_path / "reg"), "--method", "nope")
    assert code != 0 and "nothing to evaluate" in err
    code, _, err = zoo("eval", "--recipe", str(DEMO), "--registry", str(tmp_path / "reg"))
    assert code != 0 and "REFS" in err


def _small(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(DEMO.read_text().replace("epochs: 30", "epochs: 1"))
    return path


def test_resume_no_resume_overwrite_and_registry_check(tmp_path):
    recipe, out = _small(tmp_path), tmp_path / "run"
    base = ("run", str(recipe), "--out", str(out), "-q")
    code, first, err = zoo(*base, "--registry", "none")
    assert code == 0, err
    code, again, err = zoo(*base, "--registry", "none")
    assert code == 0 and "already complete" not in err  # -q: quiet
    code, again, err = zoo("run", str(recipe), "--out", str(out), "--registry", "none")
    assert code == 0 and "already complete" in err and "trained in" not in err
    assert again.split("\n")[:5] == first.split("\n")[:5]
    code, _, err = zoo(*base, "--registry", "none", "--no-resume")
    assert code != 0 and "already holds a run" in err and err.count("\n") == 1
    code, _, err = zoo(*base, "--registry", str(tmp_path / "reg"))
    assert code != 0 and "was run with registry none" in err and not (tmp_path / "reg").exists()
    (out / "finetune" / "marker").write_text("x")
    (out / "mine.txt").write_text("user file")
    code, _, err = zoo(*base, "--registry", str(tmp_path / "reg"), "--overwrite")
    assert code == 0, err
    assert not (out / "finetune" / "marker").exists() and (out / "mine.txt").read_text() == "user file"
    assert json.loads((out / "run.json").read_text())["registry"] == str((tmp_path / "reg").resolve())
    assert len(LocalRegistry(tmp_path / "reg").find()) == 3


def test_a_second_run_into_a_busy_folder_fails_at_once(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".zoo-run.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        code, _, err = zoo("run", str(_small(tmp_path)), "--out", str(out), "--registry", "none")
    assert code != 0 and "in use by another zoo run" in err and err.count("\n") == 1
    assert not (out / "recipe.yaml").exists()


def test_quiet_after_the_subcommand(tmp_path):
    code, out, err = zoo("run", str(_small(tmp_path)), "--out", str(tmp_path / "run"), "--registry", "none", "-q")
    assert code == 0 and err == "" and "finetune" in out
    code, _, err = zoo("list", "--registry", str(tmp_path / "nothing"), "--quiet")
    assert code == 0 and err == ""
    code, _, err = zoo("list", "--registry", str(tmp_path / "nothing"))
    assert "no experts" in err


def test_set_addresses_list_items(tmp_path):
    code, out, err = zoo("run", str(DEMO), "--dry-run", "--set", "methods.1.memory_size=50")
    assert code == 0 and "memory_size: 50" in out, err
    code, out, err = zoo("run", str(DEMO), "--dry-run", "--set", "methods.replay.memory_size=70")
    assert code == 0 and "memory_size: 70" in out, err
    code, _, err = zoo("run", str(DEMO), "--dry-run", "--set", "methods.9.memory_size=50")
    assert code != 0 and "out of range" in err and "internal error" not in err


def test_push_and_pull_carry_tags_the_same_way_and_say_so(three, tmp_path):
    root, (a, b, c) = three
    src = LocalRegistry(root)
    src.tag("base:latest", "a")
    code, out, err = zoo("push", "--to", str(tmp_path / "dst"), "--registry", str(root), "--name", "a")
    assert code == 0, err
    assert f"tag base:latest -> {a.id} (new)" in out and "pushed 1 new expert(s)" in out
    src.tag("base:latest", "b")
    code, out, err = zoo("push", "--to", str(tmp_path / "dst"), "--registry", str(root), "b")
    assert f"tag base:latest -> {b.id} (moved from {a.id})" in out
    # pull: the same rule (tags pointing at the selected experts come along), announced
    src.tag("best", "c")
    code, out, err = zoo("pull", str(root), "--registry", str(tmp_path / "mine"), "--task", "2")
    assert code == 0 and f"tag best -> {c.id} (new)" in out and "pulled 1 new expert(s)" in out, err
    assert LocalRegistry(tmp_path / "mine").tags() == {"best": c.id}
    # the Python API: pull() follows the same rule
    api = LocalRegistry(tmp_path / "api")
    src.pull(api, ["a", "b"])
    assert api.tags() == {"base:latest": b.id}


def test_gc_add_and_tag_report_what_happened(three, tmp_path):
    root, (a, b, c) = three
    (root / "tmp" / ("0" * 32)).mkdir()  # debris of a killed writer: a workspace without its lock
    code, out, _ = zoo("gc", "--registry", str(root))
    assert code == 0 and "gc: 1 debris removed" in out, out
    folder = tmp_path / "a"
    code, out, _ = zoo("add", str(folder), "--registry", str(root))
    assert code == 0 and out.strip() == f"already present: a ({a.id})"
    code, out, err = zoo("tag", "--registry", str(root))
    assert code == 0 and out == "" and "no tags" in err


def test_the_data_error_names_a_flag_that_exists_and_the_flag_works(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    code, out, err = zoo("run", str(ROOT / "recipes" / "split-cifar100.yaml"), "--data-root", str(empty), "--dry-run")
    assert code == 0 and f"data_root: {empty}" in out, err
    code, _, err = zoo("run", str(ROOT / "recipes" / "split-cifar100.yaml"), "--data-root", str(empty),
                       "--registry", "none", "--out", str(tmp_path / "run"))
    assert code != 0 and "--data-root DIR" in err and str(empty) in err and err.count("\n") == 1, err
    code, _, err = zoo("eval", "x", "--recipe", str(ROOT / "recipes" / "split-cifar100.yaml"), "--data-root",
                       str(empty), "--registry", str(tmp_path / "none"))
    assert code != 0 and "internal error" not in err


def test_list_shows_each_cards_headline_metric(three):
    root, (a, b, c) = three
    code, out, _ = zoo("list", "--registry", str(root))
    header, *rows = out.splitlines()
    assert header.split()[5] == "METRIC"
    assert [r.split()[5] for r in rows] == ["accuracy=0.5100", "accuracy=0.5200", "accuracy=0.5300"]


def test_overwrite_never_deletes_what_zoo_did_not_write(tmp_path):
    out = tmp_path / "project"
    (out / "checkpoints" / "resnet").mkdir(parents=True)
    (out / "resnet").mkdir()
    (out / "recipe.yaml").write_text("mine")
    code, _, err = zoo("run", str(_small(tmp_path)), "--out", str(out), "--registry", "none", "--overwrite", "-q")
    assert code != 0 and "holds no zoo run" in err and err.count("\n") == 1
    assert (out / "checkpoints" / "resnet").is_dir() and (out / "resnet").is_dir()
    assert (out / "recipe.yaml").read_text() == "mine"


def test_a_torn_history_line_does_not_block_a_resume(tmp_path, monkeypatch):
    from zoo.methods import baselines
    from zoo.recipe import load_recipe
    from zoo.runner import RunOptions, run_recipe

    recipe = load_recipe(_small(tmp_path), {"methods": ["finetune"]})
    original = baselines.Finetune.train_stage

    def crash(self, t):
        if t == 2:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, t)

    opts = RunOptions(out=tmp_path / "run", registry="none", progress=False)
    monkeypatch.setattr(baselines.Finetune, "train_stage", crash)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, opts)
    history = tmp_path / "run" / "finetune" / "history.jsonl"
    with open(history, "a") as fh:  # a write cut short by the kill
        fh.write('{"method": "finetune", "sta')
    monkeypatch.setattr(baselines.Finetune, "train_stage", original)
    run_recipe(recipe, opts)
    assert [json.loads(line)["stage"] for line in history.read_text().splitlines()] == [0, 1, 2, 3, 4]


def test_a_resume_with_another_push_mode_is_refused(tmp_path):
    recipe, out = _small(tmp_path), tmp_path / "run"
    assert zoo("run", str(recipe), "--out", str(out), "--registry", "none", "-q")[0] == 0
    code, _, err = zoo("run", str(recipe), "--out", str(out), "--registry", "none", "--push", "stages", "-q")
    assert code != 0 and "--push final" in err and err.count("\n") == 1


def test_metric_filters_refuse_an_operator_that_is_not_a_comparison():
    from registry.errors import ZooError

    for op in ("> 0 OR 1=1 OR 0", "!=", ""):
        with pytest.raises(ZooError, match="operator"):
            MetricFilter("accuracy", op, 0.5)
