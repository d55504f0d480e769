"""Classes of failure from issue 9, each with several variants. Every refusal must be one ``zoo: error:`` line
with a non-zero exit, leave the registry snapshot (files + sha256, index rows, tags) unchanged, write nothing
outside the folders named, and leave a registry that still opens."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import struct
import tempfile
from pathlib import Path

import pytest
import torch

from registry import Expert, LocalRegistry
from registry.errors import ZooError
from tests.helpers import make_expert, make_model, snapshot
from tests.test_cli import zoo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def reg_root(tmp_path):
    root = tmp_path / "reg"
    reg = LocalRegistry(root)
    reg.add(make_expert(tmp_path / "a", name="alpha", seed=1))
    reg.add(make_expert(tmp_path / "b", name="beta", seed=2, tasks=[(1, [0, 1, 2, 3])], buffer=True))
    reg.tag("base:latest", "alpha")
    reg.close()
    return root


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> size:mtime), to see that nothing else was written."""
    return {str(p.relative_to(folder)): f"{p.stat().st_size}" for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(args: list[str], root: Path, *, message: str = "", outside: Path | None = None) -> str:
    """Run the CLI expecting a refusal; check the four promises; return stderr."""
    before = snapshot(root)
    around = _tree(outside) if outside is not None else None
    code, out, err = zoo(*args)
    assert code != 0, (args, out, err)
    assert err.startswith("zoo: error: ") and err.count("\n") == 1, err
    assert "internal error" not in err and "Traceback" not in err, err
    assert message in err, (message, err)
    assert snapshot(root) == before
    if around is not None:
        assert _tree(outside) == around
    LocalRegistry(root).close()  # still opens
    return err


def _edit_card(folder: Path, change) -> None:
    """Rewrite zoo.json with ``change(card_dict)`` applied (the sha256s of other files stay right)."""
    path = folder / "zoo.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, allow_nan=True))


# --- 1. one value SQLite or JSON cannot hold -------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda d: d["metrics"].update(acc=float("nan")), "not valid JSON"),
    (lambda d: d["metrics"].update(acc=float("inf")), "not valid JSON"),
    (lambda d: d["hyperparameters"].update(lr=float("-inf")), "not valid JSON"),
    (lambda d: d["tasks"][0].update(id=2**63), "64 bits"),
    (lambda d: d["tasks"][0]["classes"].append(2**70), "64 bits"),
    (lambda d: d.update(seed=2**64), "64 bits"),
    (lambda d: d["hyperparameters"].update(deep=json.loads("[" * 200 + "]" * 200)), "nested"),
    (lambda d: d.update(method="a\udc80b"), "not valid Unicode"),
    (lambda d: d["labels"].append("\x1b[31mred"), "control characters"),
    (lambda d: d["files"].update({"*": {"sha256": "0" * 64, "size": 1}}), "invalid file name"),
])
def test_crafted_cards_are_refused_before_anything_is_stored(tmp_path, reg_root, change, message):
    folder = make_expert(tmp_path / "crafted", name="crafted", seed=7).path
    _edit_card(folder, change)
    refused(["add", str(folder), "--registry", str(reg_root)], reg_root, message=message)


@pytest.mark.parametrize("metric", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_metrics_are_stored_as_null_consistently(tmp_path, metric):
    reg = LocalRegistry(tmp_path / "reg")
    card = reg.save(make_model(), name="nan-metric", tasks=[(0, range(4))], metrics={"val_accuracy": metric, "ok": 1.0},
                    hyperparameters={"lr": metric, "nested": [metric, {"x": metric}]})
    assert card.metrics == {"val_accuracy": None, "ok": 1.0}
    assert card.hyperparameters == {"lr": None, "nested": [None, {"x": None}]}
    again = LocalRegistry(tmp_path / "reg")
    assert again.card("nan-metric").metrics["val_accuracy"] is None and again.verify() == []
    code, out, _ = zoo("list", "--registry", str(tmp_path / "reg"), "--json")
    assert code == 0 and "NaN" not in out and "Infinity" not in out and json.loads(out)[0]["metrics"]["ok"] == 1.0
    code, out, _ = zoo("show", "nan-metric", "--registry", str(tmp_path / "reg"))
    assert code == 0 and "val_accuracy=null" in out


def test_runs_that_produce_nan_metrics_still_push(tmp_path):
    """Reached in normal use: no validation data gives NaN validation metrics; the run must still push."""
    code, _, err = zoo("--quiet", "run", str(ROOT / "recipes" / "modelzoo-digits.yaml"), "--out", str(tmp_path / "run"),
                       "--registry", str(tmp_path / "reg"), "--set", "stream.val_fraction=0", "--set", "training.epochs=1",
                       "--set", "methods=[isolated]")
    assert code == 0, err
    reg = LocalRegistry(tmp_path / "reg")
    assert len(reg.find()) == 5 and reg.verify() == []
    assert all(c.metrics["val_accuracy"] is None for c in reg.find())


def test_an_unindexable_folder_does_not_brick_the_registry(tmp_path, reg_root):
    # A folder planted in experts/ (by a crash of an older zoo, or by hand) whose card the index refuses.
    planted = make_expert(tmp_path / "p", name="planted", seed=9)
    target = reg_root / "experts" / planted.id
    os.rename(planted.path, target)
    _edit_card(target, lambda d: d["metrics"].update(acc=float("nan")))
    code, out, err = zoo("list", "--registry", str(reg_root), "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["alpha", "beta"]
    code, out, err = zoo("verify", "--registry", str(reg_root))
    assert code != 0 and planted.id in out + err
    code, out, err = zoo("rm", planted.id, "--registry", str(reg_root))
    assert code == 0, err
    assert not target.exists() and LocalRegistry(reg_root).verify() == []
    # gc removes such folders too, and rebuilds damaged index rows from the cards on disk
    os.rename(make_expert(tmp_path / "q", name="planted2", seed=10).path, reg_root / "experts" / "0123456789abcdef")
    with sqlite3.connect(reg_root / "index.sqlite") as db:
        db.execute("UPDATE experts SET card = '{}' WHERE name = 'beta'")
    code, out, err = zoo("gc", "--registry", str(reg_root))
    assert code == 0 and "1 unreadable folder(s) removed" in out, out + err
    reg = LocalRegistry(reg_root)
    assert sorted(c.name for c in reg.find()) == ["alpha", "beta"] and reg.tags() == {"base:latest": reg.card("alpha").id}


# --- 2. pickle by the back door ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    {"checkpoint_path": "/tmp/evil.pth"},
    {"pretrained": True},
    {"pretrained_cfg_overlay": {"file": "/tmp/evil.pth"}},
    {"weights_file": "x"},
    {"cache_dir": "/tmp"},
])
def test_timm_loading_arguments_are_refused(tmp_path, reg_root, args):
    from registry.errors import ModelArgsError
    from zoo.models import create_model

    with pytest.raises(ModelArgsError):
        create_model("resnet10t", 4, **args)
    folder = make_expert(tmp_path / "t", name="timm", arch="resnet10t", model_args={}, seed=3).path
    config = json.loads((folder / "config.json").read_text())
    config["model_args"] = args
    data = (json.dumps(config) + "\n").encode()
    (folder / "config.json").write_bytes(data)
    import hashlib

    _edit_card(folder, lambda d: d["files"]["config.json"].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data)))
    refused(["add", str(folder), "--registry", str(reg_root)], reg_root, message="config.json")
    with pytest.raises(ZooError, match="config.json"):
        Expert.load(folder).verify()


@pytest.mark.parametrize("args, message", [
    ({"hidden": 0}, ">= 1"), ({"depth": -1}, ">= 0"), ({"dropout": 1.5}, "[0, 1)"), ({"bogus": 1}, "no argument"),
    ({"hidden": "x"}, "integer"),
])
def test_zoo_model_args_follow_the_constructor(args, message):
    from registry.errors import ModelArgsError
    from zoo.models import create_model

    with pytest.raises(ModelArgsError, match=message.replace("[", r"\[").replace(")", r"\)")):
        create_model("mlp", 4, **args)


# --- 3. zoo deletes other people's files --------------------------------------------------------------------------

def _foreign_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "someone"
    (folder / "tmp").mkdir(parents=True)
    (folder / "trash").mkdir()
    (folder / "tmp" / "thesis.tex").write_text("precious")
    (folder / "trash" / "keep.me").write_text("also precious")
    with sqlite3.connect(folder / "index.sqlite") as db:
        db.execute("CREATE TABLE notes (x TEXT)")
        db.execute("INSERT INTO notes VALUES ('mine')")
    return folder


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["verify"], ["gc"], ["show", "x"], ["tag"]])
def test_a_folder_zoo_did_not_make_is_not_a_registry(tmp_path, command):
    folder = _foreign_folder(tmp_path)
    before = _tree(folder)
    code, _, err = zoo(*command, "--registry", str(folder))
    assert code != 0 and err.count("\n") == 1 and "internal error" not in err, err
    assert _tree(folder) == before
    with sqlite3.connect(folder / "index.sqlite") as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["notes"]


@pytest.mark.parametrize("command", ["add", "pull", "push"])
def test_writing_commands_do_not_adopt_a_foreign_folder(tmp_path, reg_root, command):
    folder = _foreign_folder(tmp_path)
    before = _tree(folder)
    expert = make_expert(tmp_path / "e", name="newcomer", seed=5)
    args = {"add": ["add", str(expert.path), "--registry", str(folder)],
            "pull": ["pull", str(reg_root), "--registry", str(folder)],
            "push": ["push", "--to", str(folder), "--registry", str(reg_root)]}[command]
    code, _, err = zoo(*args)
    assert code != 0 and "not a zoo registry" in err and err.count("\n") == 1, err
    assert _tree(folder) == before


def test_only_zoo_debris_is_deleted_and_only_by_writes(tmp_path, reg_root):
    (reg_root / "tmp" / "notes.txt").write_text("not zoo's")
    (reg_root / "tmp" / ("a" * 32)).mkdir()  # zoo's naming, no lock: abandoned by a killed writer
    (reg_root / "trash" / ("b" * 32 + ".lock")).write_text("")
    for command in (["list"], ["verify"], ["show", "alpha"]):
        assert zoo(*command, "--registry", str(reg_root))[0] == 0
    assert (reg_root / "tmp" / ("a" * 32)).exists() and (reg_root / "trash" / ("b" * 32 + ".lock")).exists()
    assert zoo("add", str(make_expert(tmp_path / "n", name="n", seed=11).path), "--registry", str(reg_root))[0] == 0
    assert sorted(p.name for p in (reg_root / "tmp").iterdir()) == ["notes.txt"]
    assert list((reg_root / "trash").iterdir()) == []


# --- 4. ids are derived, not trusted -----------------------------------------------------------------------------------

def test_a_folder_cannot_squat_another_experts_id(tmp_path):
    genuine = make_expert(tmp_path / "genuine", name="genuine", seed=1)
    squat = make_expert(tmp_path / "squat", name="genuine", seed=2)  # other weights
    _edit_card(squat.path, lambda d: d.update(id=genuine.id, digest=genuine.card.digest))
    root = tmp_path / "reg"
    LocalRegistry(root).close()
    refused(["add", str(squat.path), "--registry", str(root)], root, message="content gives id")
    assert zoo("add", str(genuine.path), "--registry", str(root))[0] == 0
    reg = LocalRegistry(root)
    stored, original = reg.get(genuine.id).state_dict(), genuine.state_dict()
    assert set(stored) == set(original) and all(torch.equal(stored[k], original[k]) for k in stored)
    # and with the genuine one stored, the squatter is still refused (not a silent no-op)
    refused(["add", str(squat.path), "--registry", str(root)], root, message="content gives id")


def test_a_changed_name_or_task_changes_the_id(tmp_path, reg_root):
    for change in (lambda d: d.update(name="renamed"), lambda d: d["tasks"][0].update(id=5),
                   lambda d: d["parents"].append({"id": "0" * 16, "digest": "0" * 64, "role": "base"})):
        folder = make_expert(tmp_path / f"c{random.random()}", name="orig", seed=4).path
        _edit_card(folder, change)
        refused(["add", str(folder), "--registry", str(reg_root)], reg_root, message="content gives id")


# --- 5. safetensors: as strict as the safetensors library --------------------------------------------------------------

def _rewrite_header(path: Path, change) -> None:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    change(header)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def _first(header: dict) -> dict:
    return header[next(k for k in header if k != "__metadata__")]


@pytest.mark.parametrize("change", [
    lambda h: _first(h).update(data_offsets=[_first(h)["data_offsets"][0] + 4, _first(h)["data_offsets"][1] + 4]),
    lambda h: [v.update(data_offsets=[0, v["data_offsets"][1] - v["data_offsets"][0]]) for k, v in h.items()
               if k != "__metadata__"],
    lambda h: _first(h).update(shape=[-1] + _first(h)["shape"][1:]),
    lambda h: _first(h).update(shape=[float(d) for d in _first(h)["shape"]]),
    lambda h: _first(h).update(shape=[str(d) for d in _first(h)["shape"]]),
    lambda h: _first(h).update(shape=[True] * len(_first(h)["shape"])),
    lambda h: h.update(__metadata__=["not", "a", "dict"]),
    lambda h: h.update(__metadata__={"k": 1}),
    lambda h: _first(h).update(dtype="F128"),
    lambda h: _first(h).update(extra=1),
])
def test_bad_safetensors_headers_are_refused_by_add_and_verify(tmp_path, reg_root, change):
    expert = make_expert(tmp_path / "h", name="header", seed=6)
    path = expert.path / "model.safetensors"
    _rewrite_header(path, change)
    import hashlib

    data = path.read_bytes()
    _edit_card(expert.path, lambda d: d["files"]["model.safetensors"].update(
        sha256=hashlib.sha256(data).hexdigest(), size=len(data)))
    refused(["add", str(expert.path), "--registry", str(reg_root)], reg_root, message="model.safetensors")
    with pytest.raises(ZooError):
        Expert.load(expert.path).verify()


# --- 6. recipe fields become paths ------------------------------------------------------------------------------------

@pytest.mark.parametrize("override", ["name=/tmp/escape", "name=../../escape", "name=a/b", "methods.0.label=../x",
                                      "methods.0.label=/abs", "name=.hidden..x", "name="])
def test_recipe_names_cannot_leave_the_run_folder(tmp_path, override):
    out = tmp_path / "run"
    code, _, err = zoo("run", str(ROOT / "recipes" / "demo.yaml"), "--out", str(out), "--registry", "none",
                       "--set", override)
    assert code != 0 and err.count("\n") == 1 and "recipe:" in err, err
    assert not out.exists() and not (tmp_path / "escape").exists() and not Path("/tmp/escape").exists()


# --- 7. YAML alias bombs --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
    "name: &n demo\nalias: *n\n",
    "training: &t {epochs: 1}\nother: {<<: *t}\n",
])
def test_yaml_aliases_are_refused_quickly(tmp_path, text):
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    start = time.perf_counter()
    code, _, err = zoo("run", str(path), "--dry-run")
    assert time.perf_counter() - start < 5
    assert code != 0 and "aliases" in err and err.count("\n") == 1, err


def test_huge_recipes_and_alias_bombs_in_set_are_refused(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("description: " + "x" * (2 * 1024 * 1024) + "\n")
    code, _, err = zoo("run", str(path), "--dry-run")
    assert code != 0 and "larger than" in err
    code, _, err = zoo("run", str(ROOT / "recipes" / "demo.yaml"), "--dry-run", "--set", "seed=[&a [1], *a]")
    assert code != 0 and "aliases" in err and err.count("\n") == 1, err


# --- 8. multi-expert commands validate everything first -------------------------------------------------------------

def test_add_good_and_bad_stores_nothing(tmp_path, reg_root):
    good = make_expert(tmp_path / "good", name="good", seed=21)
    bad = make_expert(tmp_path / "bad", name="bad", seed=22)
    with open(bad.path / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    refused(["add", str(good.path), str(bad.path), "--registry", str(reg_root)], reg_root, message="sha256")
    squat = make_expert(tmp_path / "sq", name="sq", seed=23)
    _edit_card(squat.path, lambda d: d.update(name="other"))
    refused(["add", str(good.path), str(squat.path), "--registry", str(reg_root)], reg_root)


def test_push_to_a_folder_with_a_corrupt_expert_stores_nothing(tmp_path, reg_root):
    dest = tmp_path / "dest"
    LocalRegistry(dest).close()
    beta = LocalRegistry(reg_root).card("beta")
    with open(reg_root / "experts" / beta.id / "buffer.safetensors", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x07")
    before = snapshot(dest)
    code, _, err = zoo("push", "--to", str(dest), "--registry", str(reg_root))
    assert code != 0 and err.count("\n") == 1 and "internal error" not in err, err
    assert snapshot(dest) == before


@pytest.mark.parametrize("tag", ["bad tag", "../x", "", "a" * 200])
def test_consolidate_with_a_bad_tag_writes_no_base(tmp_path, reg_root, tag):
    refused(["consolidate", "--base", "alpha", "--experts", "beta", "--tag-as", tag, "--registry", str(reg_root),
             "--epochs", "1"], reg_root)


# --- 9. network faults are one line -----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["list"], ["show", "x"], ["pull", "URI"], ["push", "--to", "URI"]])
def test_hub_down_is_one_line_naming_the_endpoint(tmp_path, reg_root, monkeypatch, command, capfd):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    uri = "hf://zoo-test/unreachable"
    args = [a.replace("URI", uri) for a in command]
    if command[0] in ("list", "show"):
        args += ["--registry", uri]
    else:
        args += ["--registry", str(reg_root)]
    before = snapshot(reg_root)
    code, _, err = zoo("--quiet", *args)
    captured = capfd.readouterr()
    assert code != 0 and err.count("\n") == 1, err
    assert "internal error" not in err and ("127.0.0.1" in err or "cannot reach" in err), err
    assert "Retrying" not in captured.err + captured.out
    assert snapshot(reg_root) == before


def test_http_statuses_map_to_one_line_with_a_hint():
    import httpx2 as httpx
    from huggingface_hub.errors import HfHubHTTPError

    from registry.hub import hub_errors

    for status, hint in ((401, "hf auth login"), (403, "forbidden"), (409, "already exists"), (412, "changed meanwhile"),
                         (500, "refused")):
        request = httpx.Request("POST", "http://127.0.0.1:9/api/models/org/repo/commit/main?x=secret")
        response = httpx.Response(status, request=request)
        with pytest.raises(ZooError) as info:
            with hub_errors("hf://org/repo"):
                raise HfHubHTTPError("boom", response=response)
        text = str(info.value)
        assert f"HTTP {status}" in text and hint in text and "127.0.0.1:9/api/models" in text and "secret" not in text
    for exc in (httpx.ConnectError("refused", request=httpx.Request("GET", "http://127.0.0.1:9/x")),
                httpx.ReadTimeout("slow", request=httpx.Request("GET", "http://127.0.0.1:9/x")),
                httpx.RemoteProtocolError("cut", request=httpx.Request("GET", "http://127.0.0.1:9/x"))):
        with pytest.raises(ZooError, match="127.0.0.1:9"):
            with hub_errors("hf://org/repo"):
                raise exc


# --- 10. smaller ones ---------------------------------------------------------------------------------------------------

def test_symlinks_out_of_an_expert_folder_are_refused(tmp_path, reg_root):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    expert = make_expert(tmp_path / "s", name="linky", seed=31)
    readme = expert.path / "README.md"
    readme.unlink()
    readme.symlink_to(secret)
    refused(["add", str(expert.path), "--registry", str(reg_root)], reg_root, message="symbolic link")


def test_terminal_escapes_never_reach_the_terminal(tmp_path, reg_root):
    code, _, err = zoo("show", "\x1b[2J\x1b[31mgotcha", "--registry", str(reg_root))
    assert code != 0 and "\x1b" not in err and "\\x1b" in err


def test_killed_pulls_leave_no_temporary_folders(tmp_path):
    from registry.hub import _sweep_stale_downloads

    dead = Path(tempfile.gettempdir()) / "zoo-hub-999999999-abc123"
    dead.mkdir(exist_ok=True)
    (dead / "f").write_text("x")
    mine = Path(tempfile.mkdtemp(prefix=f"zoo-hub-{os.getpid()}-"))
    other = Path(tempfile.gettempdir()) / "zoo-hubby-not-ours"
    other.mkdir(exist_ok=True)
    try:
        assert _sweep_stale_downloads() >= 1
        assert not dead.exists() and mine.exists() and other.exists()
    finally:
        for p in (mine, other):
            p.rmdir()


@pytest.mark.parametrize("override, key", [
    ("training.batch_size=0", "training.batch_size"), ("training.patience=-1", "training.patience"),
    ("training.epochs=0", "training.epochs"), ("stream.n_tasks=0", "n_tasks"), ("model.args.hidden=0", "hidden"),
    ("training.lr=-1", "training.lr"), ("methods.1.memory_size=-5", "memory_size"),
    ("model.args.num_classes=-3", "num_classes"), ("training.label_smoothing=1.5", "label_smoothing"),
])
def test_nonsense_recipe_values_are_refused(override, key):
    code, _, err = zoo("run", str(ROOT / "recipes" / "demo.yaml"), "--dry-run", "--set", override)
    assert code != 0 and key in err and err.count("\n") == 1 and "internal error" not in err, err


def test_tag_racing_rm_is_a_clear_error(tmp_path, reg_root, monkeypatch):
    reg = LocalRegistry(reg_root)
    card = reg.card("alpha")
    original = reg.card

    def card_then_gone(ref):
        c = original(ref)
        LocalRegistry(reg_root).remove(c.id)  # another process removes it in between
        return c

    monkeypatch.setattr(reg, "card", card_then_gone)
    with pytest.raises(ZooError, match="removed"):
        reg.tag("race", card.id)


# --- 11. no CLI path ends in an internal error ------------------------------------------------------------------------

def _bad_inputs(root: Path, tmp: Path) -> list[list[str]]:
    r = ["--registry", str(root)]
    missing = str(tmp / "missing")
    empty_recipe = tmp / "empty.yaml"
    empty_recipe.write_text("")
    return [
        ["list", *r, "--task", "-1"], ["list", *r, "--metric", "nonsense"], ["list", *r, "--metric", "x>>1"],
        ["show", "", *r], ["show", "../etc", *r], ["show", "nope", *r], ["verify", "nope", *r],
        ["rm", "nope", *r], ["rm", *r, "alpha", "nope"], ["tag", "bad tag", "alpha", *r], ["tag", "--delete", "nope", *r],
        ["tag", "ok", "nope", *r], ["add", missing, *r], ["add", str(tmp), *r],
        ["push", "--to", "hf://bad uri", *r], ["push", "--to", "ftp://x", *r], ["push", "nope", "--to", str(tmp / "d"), *r],
        ["pull", "hf://", *r], ["pull", missing, *r], ["export", "alpha", "--to", str(tmp / "x"), *r],
        ["run", missing], ["run", str(empty_recipe), "--dry-run"], ["run", str(tmp), "--dry-run"],
        ["eval", "alpha", "--recipe", missing, *r], ["eval", "nope", "--recipe", str(ROOT / "recipes" / "demo.yaml"), *r],
        ["eval", "alpha", "--recipe", str(ROOT / "recipes" / "demo.yaml"), *r],
        ["schedule", "alpha", "--recipe", str(ROOT / "recipes" / "demo.yaml"), *r],
        ["schedule", "--recipe", str(ROOT / "recipes" / "demo.yaml"), "--task", "99", *r],
        ["consolidate", "--base", "nope", "--experts", "beta", *r], ["consolidate", "--base", "alpha", *r],
        ["consolidate", "--base", "alpha", "--experts", "alpha", *r],
        ["consolidate", "--base", "alpha", "--experts", "beta", "--epochs", "0", *r],
        ["consolidate", "--base", "alpha", "--experts", "beta", "--lr", "nan", *r],
        ["gc", "--registry", "hf://org/repo"], ["list", "--registry", missing],
    ]


def test_no_bad_input_ends_in_an_internal_error(tmp_path, reg_root):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen = []
    for args in _bad_inputs(reg_root, scratch):
        before = snapshot(reg_root)
        code, out, err = zoo("--quiet", *args)
        seen.append((args, code, err))
        assert "internal error" not in err and "Traceback" not in err, (args, err)
        if code != 0:
            assert err.startswith("zoo: error: ") and err.count("\n") == 1, (args, err)
        assert snapshot(reg_root) == before, args
    assert sum(code != 0 for _, code, _ in seen) >= len(seen) - 2  # nearly all of them are refusals


# --- fuzzing: mutated headers and cards -------------------------------------------------------------------------------

def _mutants(rng: random.Random, header: dict, card: dict, n: int) -> list[tuple[str, dict, dict]]:
    """Seeded structural mutations of a safetensors header and of zoo.json."""
    weird = [None, True, -1, 2**64, 1.5, float("nan"), "", "x" * 300, [], {}, [1, "a"], {"a": {"b": []}}, "\udc00",
             "../x", "*"]
    out = []
    for i in range(n):
        h, c = json.loads(json.dumps(header)), json.loads(json.dumps(card))
        target = rng.choice(["header", "card"])
        doc = h if target == "header" else c
        # pick a random path into the document
        node, path = doc, []
        for _ in range(rng.randint(1, 4)):
            if isinstance(node, dict) and node:
                key = rng.choice(sorted(node))
            elif isinstance(node, list) and node:
                key = rng.randrange(len(node))
            else:
                break
            path.append(key)
            if not isinstance(node[key], (dict, list)):
                break
            node = node[key]
        if not path:
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        op = rng.choice(["set", "delete", "wrap"])
        if op == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif op == "wrap":
            parent[path[-1]] = [parent[path[-1]]]
        else:
            parent[path[-1]] = rng.choice(weird)
        out.append((f"{target}:{'/'.join(map(str, path))}:{op}", h, c))
    return out


def test_fuzzed_headers_and_cards_never_break_the_registry(tmp_path, reg_root):
    rng = random.Random(1234)
    base = make_expert(tmp_path / "fuzz-base", name="fuzzed", seed=41)
    data = (base.path / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    card = json.loads((base.path / "zoo.json").read_text())
    import hashlib
    import shutil

    accepted = 0
    for i, (what, h, c) in enumerate(_mutants(rng, header, card, 60)):
        folder = tmp_path / f"m{i}"
        shutil.copytree(base.path, folder)
        raw = json.dumps(h, allow_nan=True).encode()
        body = struct.pack("<Q", len(raw)) + raw + data[8 + n:]
        (folder / "model.safetensors").write_bytes(body)
        if isinstance(c.get("files"), dict) and isinstance(c["files"].get("model.safetensors"), dict):
            c["files"]["model.safetensors"].update(sha256=hashlib.sha256(body).hexdigest(), size=len(body))
        (folder / "zoo.json").write_text(json.dumps(c, allow_nan=True))
        before = snapshot(reg_root)
        code, _, err = zoo("add", str(folder), "--registry", str(reg_root))
        assert "internal error" not in err and "Traceback" not in err, (what, err)
        if code != 0:
            assert err.startswith("zoo: error: ") and err.count("\n") == 1, (what, err)
            assert snapshot(reg_root) == before, what
        else:
            accepted += 1  # a harmless mutation (e.g. of a free-form hyperparameter); the registry must hold
        reg = LocalRegistry(reg_root)
        assert reg.verify() == [], what
        reg.close()
    assert accepted < 30


def test_a_registry_from_before_markers_is_adopted_only_on_request(tmp_path, reg_root):
    (reg_root / "zoo-registry.json").unlink()  # as an older zoo left it
    with sqlite3.connect(reg_root / "index.sqlite") as db:
        db.execute("PRAGMA application_id = 0")
    code, _, err = zoo("list", "--registry", str(reg_root))
    assert code != 0 and "gc --adopt" in err
    code, out, err = zoo("gc", "--adopt", "--registry", str(reg_root))
    assert code == 0, err
    assert sorted(c.name for c in LocalRegistry(reg_root).find()) == ["alpha", "beta"]
    # a foreign folder is not adopted
    folder = _foreign_folder(tmp_path)
    before = _tree(folder)
    code, _, err = zoo("gc", "--adopt", "--registry", str(folder))
    assert code != 0 and err.count("\n") == 1 and _tree(folder) == before
