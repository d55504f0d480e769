"""LocalRegistry: add/get/find/remove/tags/verify/gc, atomicity under SIGKILL, and concurrent writers."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from registry import (AmbiguousReferenceError, ExpertNotFoundError, InvalidNameError,
                      LocalRegistry, MetricFilter, ParentRef, Query, ZooError, open_registry)
from tests.helpers import files_bytes, make_expert, make_model, snapshot

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def reg(tmp_path):
    return LocalRegistry(tmp_path / "reg")


def test_add_get_round_trip_bytes_equal(tmp_path, reg):
    e = make_expert(tmp_path / "src", buffer=True)
    card = reg.add(e)
    assert card.id == e.id
    got = reg.get(e.id)
    assert files_bytes(got.path) == files_bytes(e.path)
    assert reg.path(e.id) == reg.root / "experts" / e.id


def test_adding_twice_is_a_noop(tmp_path, reg):
    e = make_expert(tmp_path / "src")
    reg.add(e)
    before = snapshot(reg.root)
    again = make_expert(tmp_path / "src2")  # same content, written again later
    assert reg.add(again).id == e.id
    assert snapshot(reg.root) == before and len(reg) == 1


def test_save_writes_straight_into_registry(reg):
    model = make_model(seed=5)
    card = reg.save(model, name="direct", tasks=[(0, [0, 1, 2, 3])], metrics={"accuracy": 0.75})
    x = torch.randn(3, 16)
    assert torch.equal(reg.get("direct").model()(x), model.eval()(x))
    assert reg.card(card.id).metrics == {"accuracy": 0.75}


def test_references_id_prefix_name_tag(tmp_path, reg):
    a = reg.add(make_expert(tmp_path / "a", name="alpha", seed=1))
    b = reg.add(make_expert(tmp_path / "b", name="beta", seed=2))
    assert reg.card(a.id).name == "alpha"
    assert reg.card(a.id[:6]).id == a.id
    assert reg.card("beta").id == b.id
    reg.tag("base:latest", "alpha")
    assert reg.card("base:latest").id == a.id
    reg.tag("base:latest", b.id)  # tags move
    assert reg.card("base:latest").id == b.id and reg.tags() == {"base:latest": b.id}
    with pytest.raises(ExpertNotFoundError, match="no expert 'gamma'"):
        reg.card("gamma")
    with pytest.raises(InvalidNameError):
        reg.tag("../up", "alpha")
    reg.untag("base:latest")
    assert reg.tags() == {}


def test_ambiguous_prefix_is_an_error(tmp_path):
    from msgspec.structs import replace  # cards are msgspec structs

    from registry.base import resolve_among

    card = make_expert(tmp_path / "e").card
    a, b = replace(card, id="abcd000000000000"), replace(card, id="abcd111111111111", name="other")
    with pytest.raises(AmbiguousReferenceError, match="id prefix 'abcd' matches 2 experts"):
        resolve_among("abcd", [a, b], {}, "test")
    assert resolve_among("abcd1", [a, b], {}, "test").id == b.id


def test_find_filters(tmp_path, reg):
    base = reg.add(make_expert(tmp_path / "base", name="base", seed=0, tasks=[(0, [0, 1, 2, 3])]))
    child = reg.add(make_expert(tmp_path / "c1", name="child", seed=1, tasks=[(1, [4, 5]), (2, [6, 7])],
                                parents=(ParentRef(base.id, base.digest, "base"),), labels=["digits"]))
    conv = reg.add(make_expert(tmp_path / "c2", name="conv", seed=7, arch="convnet",
                               model_args={"width": 4}, tasks=[(2, [0, 1, 2, 3])]))
    reg.tag("best", conv.id)
    ids = lambda q: [c.id for c in reg.find(q)]  # noqa: E731
    assert ids(Query(task=2)) == [child.id, conv.id]
    assert ids(Query(architecture="convnet")) == [conv.id]
    assert ids(Query(parent=base.id)) == [child.id]
    assert ids(Query(tag="best")) == [conv.id]
    assert ids(Query(name="base")) == [base.id]
    assert ids(Query(label="digits")) == [child.id]
    assert ids(Query(metric=MetricFilter.parse("accuracy>=0.505"))) == [child.id, conv.id]
    assert ids(Query(task=2, architecture="mlp")) == [child.id]
    assert len(reg.find()) == 3


def test_an_index_from_before_the_covering_indexes_is_upgraded_on_open(tmp_path, reg):
    import sqlite3

    a = reg.add(make_expert(tmp_path / "a", name="a", seed=0, tasks=[(0, [0, 1])], labels=["paper"]))
    b = reg.add(make_expert(tmp_path / "b", name="b", seed=1, tasks=[(0, [0, 1]), (1, [2, 3])]))
    reg.close()
    old = {"expert_tasks_task": "expert_tasks(task)", "parents_parent": "parents(parent)",
           "labels_label": "labels(label)", "metrics_key": "metrics(key, value)"}
    with sqlite3.connect(reg.root / "index.sqlite") as db:  # as an earlier zoo left it: indented rows too
        for name in ("expert_tasks_task_id", "parents_parent_id", "labels_label_id", "metrics_key_id"):
            db.execute(f"DROP INDEX {name}")
        for name, on in old.items():
            db.execute(f"CREATE INDEX {name} ON {on}")
        for card in (a, b):
            db.execute("UPDATE experts SET card = ? WHERE id = ?", (card.to_json(), card.id))
    reopened = LocalRegistry(reg.root)
    names = {r[0] for r in reopened._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert not names & set(old) and {"expert_tasks_task_id", "labels_label_id"} <= names
    assert [c.id for c in reopened.find(Query(task=0))] == [a.id, b.id]
    assert reopened.find(Query(label="paper")) == [a] and reopened.card("b") == b
    reopened.close()


def test_a_find_returns_cards_oldest_first_and_leaves_the_collector_as_it_was(tmp_path, reg):
    import gc

    cards = [reg.add(make_expert(tmp_path / str(i), name=f"e{i}", seed=i)) for i in range(4)]
    assert [c.id for c in reg.find()] == [c.id for c in sorted(cards, key=lambda c: (c.created_at, c.id))]
    assert gc.isenabled()
    gc.disable()
    try:
        reg.find()
        assert not gc.isenabled()  # a caller who turned it off keeps it off
    finally:
        gc.enable()


def test_remove_drops_files_rows_and_tags(tmp_path, reg):
    keep = reg.add(make_expert(tmp_path / "k", name="keep", seed=1))
    gone = reg.add(make_expert(tmp_path / "g", name="gone", seed=2))
    reg.tag("t", gone.id)
    reg.remove("gone")
    assert [c.id for c in reg.find()] == [keep.id]
    assert not (reg.root / "experts" / gone.id).exists() and reg.tags() == {}
    assert list((reg.root / "trash").iterdir()) == []
    with pytest.raises(ExpertNotFoundError):
        reg.remove("gone")


def test_verify_reports_corruption(tmp_path, reg):
    e = reg.add(make_expert(tmp_path / "e"))
    assert reg.verify() == []
    path = reg.root / "experts" / e.id / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    problems = reg.verify()
    assert len(problems) == 1 and "sha256 mismatch" in problems[0] and e.id in problems[0]


@pytest.mark.parametrize("damage, message", [
    ("truncate", "does not match its sha256"),
    ("flip", "does not match its sha256"),
    ("card", "missing field 'tasks'"),
])
def test_corrupt_input_changes_nothing(tmp_path, reg, damage, message):
    import json

    reg.add(make_expert(tmp_path / "ok", name="ok", seed=1))
    before = snapshot(reg.root)
    bad = make_expert(tmp_path / "bad", name="bad", seed=2)
    path = bad.path / "model.safetensors"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-7])
    elif damage == "flip":
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x10
        path.write_bytes(bytes(data))
    else:
        card = json.loads((bad.path / "zoo.json").read_text())
        del card["tasks"]
        (bad.path / "zoo.json").write_text(json.dumps(card))
    with pytest.raises(ZooError, match=message):
        reg.add(bad.path)
    assert snapshot(reg.root) == before
    assert list((reg.root / "tmp").iterdir()) == []


def test_index_is_rebuilt_from_folders(tmp_path):
    reg = LocalRegistry(tmp_path / "reg")
    ids = sorted(reg.add(make_expert(tmp_path / f"e{i}", seed=i)).id for i in range(3))
    reg.close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / "reg" / f"index.sqlite{suffix}").unlink(missing_ok=True)
    again = LocalRegistry(tmp_path / "reg")
    assert sorted(c.id for c in again.find()) == ids


def test_open_missing_registry_without_create(tmp_path):
    with pytest.raises(ZooError, match="no registry at"):
        open_registry(tmp_path / "nowhere", create=False)
    assert not (tmp_path / "nowhere").exists()


# --- crash safety and concurrency ---------------------------------------------------------------------------

_ADDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from registry import LocalRegistry, Expert
    reg = LocalRegistry(sys.argv[1])
    experts = [Expert.load(p) for p in sys.argv[2:]]
    print("ready", flush=True)
    for expert in experts:
        reg.add(expert)
    print("done", flush=True)
""")


def _big_expert(folder: Path, seed: int):
    # ~24 MB of weights, so that a copy is still in progress when the process is killed.
    model = make_model("mlp", 10, seed, in_features=3000, hidden=1000, depth=2)
    from registry import write_expert

    return write_expert(folder, model, name=f"big{seed}", tasks=[(0, range(10))])


def test_sigkill_during_add_leaves_consistent_registry(tmp_path):
    root = tmp_path / "reg"
    LocalRegistry(root).add(make_expert(tmp_path / "small", name="small"))
    bigs = [_big_expert(tmp_path / f"big{i}", i) for i in range(2)]
    script = tmp_path / "adder.py"
    script.write_text(_ADDER.format(root=str(ROOT)))
    outcomes, debris = set(), 0
    for delay in (0.0, 0.01, 0.03, 0.06, 0.1, 0.2, 0.4):
        proc = subprocess.Popen([sys.executable, str(script), str(root), *[str(b.path) for b in bigs]],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = sorted(p.name for p in (root / "tmp").iterdir())
        debris += bool(left)
        reg = LocalRegistry(root)  # opening re-syncs the index with the folders; it deletes nothing
        on_disk = sorted(p.name for p in (root / "experts").iterdir())
        indexed = sorted(c.id for c in reg.find())
        assert on_disk == indexed
        assert reg.verify() == []
        assert sorted(p.name for p in (root / "tmp").iterdir()) == left
        reg.sweep()  # what every write does first: the killed writer's debris goes
        assert list((root / "tmp").iterdir()) == [] and list((root / "trash").iterdir()) == []
        outcomes.add(len(indexed))
        for c in reg.find():
            if c.name.startswith("big"):
                reg.remove(c.id)
        reg.close()
    assert min(outcomes) == 1  # at least one kill landed before any big expert was committed
    assert debris >= 1  # and at least one landed in the middle of writing one
    done = subprocess.run([sys.executable, str(script), str(root), *[str(b.path) for b in bigs]],
                          capture_output=True, check=True)
    assert done.stdout.endswith(b"done\n")
    assert sorted(c.name for c in LocalRegistry(root).find()) == ["big0", "big1", "small"]


_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tests.helpers import make_expert
    from registry import LocalRegistry
    from pathlib import Path
    root, worker, n, scratch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    reg = LocalRegistry(root)
    for i in range(n):
        e = make_expert(scratch / f"w{{worker}}-{{i}}", name=f"w{{worker}}-{{i}}", seed=1000 * worker + i)
        reg.add(e)
        shared = make_expert(scratch / f"shared-{{worker}}-{{i}}", name="shared", seed=i)  # same content everywhere
        reg.add(shared)
        reg.tag(f"last-{{worker}}", e.id)
""")


def test_eight_concurrent_writers_lose_nothing(tmp_path):
    root = tmp_path / "reg"
    LocalRegistry(root).close()
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(root=str(ROOT)))
    n = 4
    procs = [subprocess.Popen([sys.executable, str(script), str(root), str(w), str(n), str(tmp_path / "scratch")],
                              stderr=subprocess.PIPE) for w in range(8)]
    errors = [p.communicate()[1].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    reg = LocalRegistry(root)
    names = sorted(c.name for c in reg.find())
    assert names == sorted([f"w{w}-{i}" for w in range(8) for i in range(n)] + ["shared"] * n)
    assert len(reg.tags()) == 8
    assert reg.verify() == []
    assert sorted(p.name for p in (root / "experts").iterdir()) == sorted(c.id for c in reg.find())
