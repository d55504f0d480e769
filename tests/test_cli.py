"""The `zoo` command line against a local registry: every command, JSON output, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from registry import LocalRegistry
from tests.helpers import make_expert, snapshot
from zoo.cli import main


def zoo(*args: str, env: dict | None = None):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def populated(tmp_path):
    root = tmp_path / "reg"
    reg = LocalRegistry(root)
    a = reg.add(make_expert(tmp_path / "a", name="alpha", seed=1, tasks=[(0, [0, 1, 2, 3])]))
    b = reg.add(make_expert(tmp_path / "b", name="beta", seed=2, tasks=[(1, [4, 5, 6, 7])], buffer=True))
    return root, a, b


def test_help_lists_commands():
    code, out, _ = zoo("--help")
    assert code == 0
    for cmd in ("push", "pull", "list", "show", "verify", "rm", "tag"):
        assert f"  {cmd} " in out


def test_list_table_and_json(populated):
    root, a, b = populated
    code, out, _ = zoo("list", "--registry", str(root))
    assert code == 0 and "alpha" in out and "beta" in out and a.id[:12] in out
    code, out, _ = zoo("list", "--registry", str(root), "--json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["alpha", "beta"]
    assert rows[0]["id"] == a.id and rows[0]["architecture"] == "mlp" and rows[0]["tasks"] == [0]
    code, out, _ = zoo("list", "--registry", str(root), "--json", "--task", "1")
    assert [r["id"] for r in json.loads(out)] == [b.id]
    code, out, _ = zoo("list", "--registry", str(root), "--json", "--metric", "accuracy>0.515")
    assert [r["id"] for r in json.loads(out)] == [b.id]


def test_unknown_metric_name_is_an_error_listing_the_recorded_ones(populated):
    root, a, b = populated
    before = snapshot(root)
    for args in (("list",), ("push", "--to", str(root.parent / "other"))):
        code, out, err = zoo(*args, "--registry", str(root), "--metric", "acuracy>=0.5")
        assert code != 0 and err.count("\n") == 1, err
        assert "records metric 'acuracy'" in err and "accuracy" in err.split("recorded:")[1]
    # a known metric that nothing satisfies is an empty answer, not an error
    code, out, _ = zoo("list", "--registry", str(root), "--json", "--metric", "accuracy>5")
    assert code == 0 and json.loads(out) == []
    assert snapshot(root) == before and not (root.parent / "other").exists()


def test_registry_from_environment(populated):
    root, a, _ = populated
    code, out, _ = zoo("list", "--json", env={"ZOO_REGISTRY": str(root)})
    assert code == 0 and len(json.loads(out)) == 2


def test_show(populated):
    root, a, b = populated
    code, out, _ = zoo("show", "beta", "--registry", str(root))
    assert code == 0 and b.id in out and "buffer        6 samples" in out and "model.safetensors" in out
    code, out, _ = zoo("show", a.id[:6], "--registry", str(root), "--json")
    assert json.loads(out)["digest"] == a.digest


def test_tag_verify_rm(populated):
    root, a, b = populated
    assert zoo("tag", "base:latest", "alpha", "--registry", str(root))[0] == 0
    code, out, _ = zoo("tag", "--registry", str(root))
    assert out.strip() == f"base:latest\t{a.id}"
    code, out, _ = zoo("verify", "--registry", str(root))
    assert code == 0 and "ok: 2 expert(s) verified" in out
    code, out, _ = zoo("rm", "base:latest", "--registry", str(root))
    assert code == 0 and f"removed alpha ({a.id})" in out
    assert [c.id for c in LocalRegistry(root).find()] == [b.id]
    assert zoo("tag", "--registry", str(root))[1] == ""


def test_add_and_push_between_local_registries(tmp_path, populated):
    root, a, b = populated
    e = make_expert(tmp_path / "folder", name="gamma", seed=9)
    code, out, _ = zoo("add", str(e.path), "--registry", str(root))
    assert code == 0 and f"added gamma ({e.id})" in out
    zoo("tag", "best", "gamma", "--registry", str(root))
    dest = tmp_path / "dest"
    code, out, _ = zoo("push", "--to", str(dest), "--registry", str(root), "--task", "0")
    assert code == 0 and "pushed 2 new expert(s)" in out
    assert sorted(c.name for c in LocalRegistry(dest).find()) == ["alpha", "gamma"]
    assert LocalRegistry(dest).tags() == {"best": e.id}
    code, out, _ = zoo("push", "--to", str(dest), "--registry", str(root), "--task", "0")
    assert "pushed 0 new expert(s)" in out and "2 already there" in out
    code, out, _ = zoo("pull", str(root), "beta", "--registry", str(dest))
    assert code == 0 and len(LocalRegistry(dest).find()) == 3


def test_verify_fails_on_corruption(populated):
    root, a, _ = populated
    path = root / "experts" / a.id / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[50] ^= 1
    path.write_bytes(bytes(data))
    code, out, err = zoo("verify", "--registry", str(root))
    assert code == 1 and "FAIL" in out and "sha256 mismatch" in out
    assert err.strip() == f"zoo: error: 1 expert(s) failed verification in {root}"


@pytest.mark.parametrize("args, message", [
    (["show", "nope"], "no expert 'nope'"),
    (["rm", "nope"], "no expert 'nope'"),
    (["tag", "../x", "alpha"], "invalid tag '../x'"),
    (["tag", "ok", "nope"], "no expert 'nope'"),
    (["list", "--metric", "accuracy~1"], "invalid metric filter"),
    (["list", "--task", "x"], "Invalid value for '--task'"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["push", "--to", "hf://bad uri"], "invalid Hub registry"),
    (["pull", "s3://bucket/x"], "unsupported registry URI"),
])
def test_errors_are_one_line_and_change_nothing(populated, args, message):
    root, *_ = populated
    before = snapshot(root)
    code, out, err = zoo(*args, "--registry", str(root))
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error: ") and message in lines[0], err
    assert snapshot(root) == before


def test_add_corrupt_folder_is_refused(tmp_path, populated):
    root, *_ = populated
    before = snapshot(root)
    e = make_expert(tmp_path / "bad", name="bad", seed=3)
    path = e.path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-5])
    code, _, err = zoo("add", str(e.path), "--registry", str(root))
    assert code == 1 and err.startswith("zoo: error: bad (") and "does not match its sha256" in err
    assert snapshot(root) == before
    code, _, err = zoo("add", str(tmp_path / "missing"), "--registry", str(root))
    assert code == 1 and "not an expert folder" in err


def test_a_missing_registry_lists_empty_and_is_never_created(tmp_path):
    code, out, err = zoo("list", "--registry", str(tmp_path / "none"))
    assert code == 0 and out.split() == ["ID", "NAME", "ARCH", "TASKS", "METHOD", "METRIC", "TAGS", "CREATED"]
    assert "no experts in" in err
    code, out, _ = zoo("list", "--registry", str(tmp_path / "none"), "--json")
    assert code == 0 and json.loads(out) == []
    (tmp_path / "empty").mkdir()
    code, out, _ = zoo("list", "--registry", str(tmp_path / "empty"), "--json")
    assert code == 0 and json.loads(out) == []
    code, _, err = zoo("show", "x", "--registry", str(tmp_path / "none"))
    assert code == 1 and "no registry at" in err
    assert not (tmp_path / "none").exists() and list((tmp_path / "empty").iterdir()) == []


def test_console_script_prints_no_traceback(tmp_path, populated):
    root, *_ = populated
    proc = subprocess.run([sys.executable, "-m", "zoo.cli", "show", "ghost", "--registry", str(root)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == "zoo: error: no expert 'ghost' in " + str(root) + " (not an id, id prefix, tag or name)\n"
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "zoo.cli", "--debug", "show", "ghost", "--registry", str(root)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" in proc.stderr
