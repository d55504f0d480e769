"""HubRegistry and the CLI against the loopback Hub: push/pull round trips, only-what-is-new uploads,
revisions and tags, private repos, corrupt remote files, and timm loading of a pushed expert."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from registry import HubError, HubRegistry, LocalRegistry, open_registry, write_expert
from tests.helpers import files_bytes, make_expert, make_model, snapshot
from tests.test_cli import zoo


@pytest.fixture
def local(tmp_path):
    reg = LocalRegistry(tmp_path / "src")
    reg.add(make_expert(tmp_path / "a", name="alpha", seed=1, tasks=[(0, [0, 1, 2, 3])]))
    reg.add(make_expert(tmp_path / "b", name="beta", seed=2, tasks=[(1, [4, 5, 6, 7])], buffer=True))
    sharded = write_expert(tmp_path / "s", make_model("convnet", 10, 3, width=8), name="sharded",
                           tasks=[(2, range(10))], max_shard_size="10KB")
    reg.add(sharded)
    reg.tag("base:latest", "beta")
    return reg


def test_push_then_pull_round_trip(tmp_path, hub_server, hub_repo, local):
    hub = open_registry(f"hf://{hub_repo}")
    experts = [local.get(c.id) for c in local.find()]
    added = hub.push(experts, tags=local.tags())
    assert sorted(c.name for c in added) == ["alpha", "beta", "sharded"]
    repo = hub_server.get_repo(hub_repo)
    title = repo.commits[repo.branches["main"]].title
    assert title.startswith("Add 3 experts: ") and "alpha (" in title and "Tag base:latest" in title
    assert [c.name for c in hub.find()] == [c.name for c in local.find()]
    assert hub.tags() == local.tags()

    dest = LocalRegistry(tmp_path / "dest")
    pulled = hub.pull(dest)
    assert len(pulled) == 3
    for card in local.find():
        assert files_bytes(dest.path(card.id)) == files_bytes(local.path(card.id))
    assert dest.verify() == []
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(dest.get("sharded").model()(x), local.get("sharded").model()(x))


def test_push_uploads_only_what_is_new(tmp_path, hub_server, hub_repo, local):
    hub = HubRegistry(hub_repo)
    first = [local.get("alpha")]
    hub.push(first)
    head = hub.head()
    uploads_before = len(hub_server.find_uploads(hub_repo))
    assert hub.push(first) == []  # nothing new: no commit at all
    assert hub.head() == head and len(hub_server.find_uploads(hub_repo)) == uploads_before
    hub.push([local.get("alpha"), local.get("beta")])
    new = hub_server.find_uploads(hub_repo)[uploads_before:]
    beta = local.card("beta")
    alpha = local.card("alpha")
    sent = {hashlib.sha256(u.data).hexdigest() for u in new}
    assert {r.sha256 for r in beta.files.values()} <= sent
    assert not ({alpha.files["model.safetensors"].sha256} & sent)


def test_pull_downloads_only_requested_experts(tmp_path, hub_server, hub_repo, local):
    hub = HubRegistry(hub_repo)
    hub.push([local.get(c.id) for c in local.find()])
    hub_server.clear_requests()
    dest = LocalRegistry(tmp_path / "dest")
    hub.pull(dest, ["beta"])
    beta = local.card("beta")
    fetched = {r.filename for r in hub_server.find_requests("resolve", repo_id=hub_repo, method="GET")}
    assert fetched and all(f == "index.json" or f.startswith(f"experts/{beta.id}/") for f in fetched)
    assert [c.name for c in dest.find()] == ["beta"]


def test_pull_by_tag_copies_the_tag(tmp_path, hub_server, hub_repo, local):
    HubRegistry(hub_repo).push([local.get(c.id) for c in local.find()], tags=local.tags())
    dest = LocalRegistry(tmp_path / "dest")
    HubRegistry(hub_repo).pull(dest, ["base:latest"])
    assert dest.tags() == {"base:latest": local.card("beta").id}


def test_revisions_pin_versions(tmp_path, hub_server, hub_repo, local):
    hub = HubRegistry(hub_repo)
    hub.push([local.get("alpha")], git_tag="v1")
    hub.push([local.get("beta")])
    assert [c.name for c in open_registry(f"hf://{hub_repo}@v1").find()] == ["alpha"]
    assert [c.name for c in open_registry(f"hf://{hub_repo}").find()] == ["alpha", "beta"]
    old = hub_server.resolve_revision(hub_repo, "v1")
    assert [c.name for c in open_registry(f"hf://{hub_repo}@{old}").find()] == ["alpha"]
    with pytest.raises(HubError, match="revision not found"):
        open_registry(f"hf://{hub_repo}@no-such-rev").find()
    with pytest.raises(HubError, match="not a branch"):
        open_registry(f"hf://{hub_repo}@v1").tag("x", "alpha")


def test_remove_and_tag_on_the_hub(hub_server, hub_repo, local):
    hub = HubRegistry(hub_repo)
    hub.push([local.get(c.id) for c in local.find()])
    hub.tag("best", "alpha")
    assert HubRegistry(hub_repo).card("best").name == "alpha"
    hub.remove("alpha")
    fresh = HubRegistry(hub_repo)
    assert [c.name for c in fresh.find()] == ["beta", "sharded"] and fresh.tags() == {}
    files = hub_server.list_files(hub_repo)
    assert not any(p.startswith(f"experts/{local.card('alpha').id}/") for p in files)


def test_private_repo_needs_the_token(hub_server, hub_repo, local, monkeypatch):
    HubRegistry(hub_repo, private=True).push([local.get("alpha")])
    assert [c.name for c in HubRegistry(hub_repo).find()] == ["alpha"]
    anonymous = HubRegistry(hub_repo, token=False)
    with pytest.raises(HubError, match="repository not found"):
        anonymous.find()


def test_corrupt_remote_file_is_refused_and_changes_nothing(tmp_path, hub_server, hub_repo, local):
    hub = HubRegistry(hub_repo)
    hub.push([local.get("alpha")])
    alpha = local.card("alpha")
    # Replace the remote weights with different bytes of the same length, through a real commit.
    from huggingface_hub import CommitOperationAdd, HfApi

    data = bytearray((local.path("alpha") / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    HfApi().create_commit(hub_repo, [CommitOperationAdd(f"experts/{alpha.id}/model.safetensors", bytes(data))],
                          commit_message="tamper")
    dest = LocalRegistry(tmp_path / "dest")
    before = snapshot(dest.root)
    with pytest.raises(Exception, match="sha256 mismatch"):
        HubRegistry(hub_repo).pull(dest)
    assert snapshot(dest.root) == before
    problems = HubRegistry(hub_repo).verify()
    assert len(problems) == 1 and "sha256 mismatch" in problems[0]


def test_unknown_repo_and_expert(hub_server, hub_repo):
    with pytest.raises(HubError, match="repository not found"):
        HubRegistry(hub_repo).find()
    from huggingface_hub import HfApi

    HfApi().create_repo(hub_repo)
    hub = HubRegistry(hub_repo)
    assert hub.find() == []  # a repo without index.json is an empty registry
    with pytest.raises(Exception, match="no expert 'ghost'"):
        hub.card("ghost")


def test_snapshot_download_and_timm_load_a_pushed_expert(tmp_path, hub_server, hub_repo):
    import timm
    from huggingface_hub import snapshot_download

    model = make_model("resnet10t", 5, 4)
    reg = LocalRegistry(tmp_path / "reg")
    card = reg.save(model, name="timm-expert", tasks=[(0, range(5))])
    HubRegistry(hub_repo).push([reg.get(card.id)])
    folder = snapshot_download(hub_repo, allow_patterns=[f"experts/{card.id}/*"])
    from pathlib import Path

    expert_dir = Path(folder) / "experts" / card.id
    assert files_bytes(expert_dir) == files_bytes(reg.path(card.id)) | {"zoo.json": (reg.path(card.id) / "zoo.json").read_bytes()}
    x = torch.randn(2, 3, 32, 32)
    ours = reg.get(card.id).model()(x)
    local_timm = timm.create_model(f"local-dir:{reg.path(card.id)}", pretrained=True).eval()
    assert torch.equal(local_timm(x), ours)
    # timm's hf-hub: loader reads config.json and model.safetensors at the root of a repo: `zoo export`
    # publishes one expert that way.
    flat = hub_repo + "-model"
    code, out, err = zoo("--quiet", "export", "timm-expert", "--to", f"hf://{flat}", "--registry", str(reg.root))
    assert code == 0, err
    assert set(hub_server.list_files(flat)) >= {"config.json", "model.safetensors", "zoo.json", "README.md"}
    hub_timm = timm.create_model(f"hf-hub:{flat}", pretrained=True).eval()
    assert torch.equal(hub_timm(x), ours)
    # zoo reads the model repo back as a one-expert registry
    code, out, _ = zoo("list", "--registry", f"hf://{flat}", "--json")
    assert [r["id"] for r in json.loads(out)] == [card.id]
    dest = LocalRegistry(tmp_path / "dest")
    code, _, err = zoo("--quiet", "pull", f"hf://{flat}", "--registry", str(dest.root))
    assert code == 0, err
    assert files_bytes(dest.path(card.id)) == files_bytes(reg.path(card.id))
    # it is not a registry to push into, and a registry repo is not a target for export
    other = reg.save(make_model("resnet10t", 5, 5), name="other", tasks=[(0, range(5))])
    code, _, err = zoo("--quiet", "push", other.id, "--to", f"hf://{flat}", "--registry", str(reg.root))
    assert code == 1 and "single exported expert" in err
    HubRegistry(hub_repo).push([reg.get("other")])
    code, _, err = zoo("--quiet", "export", "other", "--to", f"hf://{hub_repo}", "--registry", str(reg.root))
    assert code == 1 and "is a zoo registry" in err


# --- the CLI against the loopback Hub ----------------------------------------------------------------------

def test_cli_push_list_show_verify_tag_rm_pull(tmp_path, hub_server, hub_repo, local):
    uri = f"hf://{hub_repo}"
    code, out, err = zoo("--quiet", "push", "--to", uri, "--registry", str(local.root), "--git-tag", "v1")
    assert code == 0, err
    assert "pushed 3 new expert(s)" in out
    code, out, _ = zoo("list", "--registry", uri, "--json")
    rows = json.loads(out)
    assert sorted(r["name"] for r in rows) == ["alpha", "beta", "sharded"]
    assert {"id", "name", "architecture", "tasks"} <= set(rows[0])
    code, out, _ = zoo("list", "--registry", uri, "--json", "--arch", "convnet")
    assert [r["name"] for r in json.loads(out)] == ["sharded"]
    code, out, _ = zoo("show", "beta", "--registry", uri)
    assert code == 0 and "base:latest" in out
    code, out, err = zoo("--quiet", "verify", "alpha", "--registry", uri)
    assert code == 0 and "ok: 1 expert(s) verified" in out, err
    assert zoo("tag", "best", "alpha", "--registry", uri)[0] == 0
    assert zoo("rm", "sharded", "--registry", uri)[0] == 0
    dest = tmp_path / "dest"
    code, out, err = zoo("--quiet", "pull", uri, "best", "--registry", str(dest))
    assert code == 0, err
    assert [c.name for c in LocalRegistry(dest).find()] == ["alpha"] and LocalRegistry(dest).tags()["best"]
    code, out, _ = zoo("list", "--registry", f"{uri}@v1", "--json")
    assert len(json.loads(out)) == 3  # the tag still pins the first push


@pytest.mark.parametrize("args, message", [
    (["pull", "hf://zoo-test/does-not-exist"], "repository not found"),
    (["list", "--registry", "hf://zoo-test/does-not-exist"], "repository not found"),
    (["pull", "hf://{repo}@nope"], "revision not found"),
    (["pull", "hf://{repo}", "ghost"], "no expert 'ghost'"),
    (["pull", "hf://../etc"], "invalid Hub registry"),
])
def test_cli_hub_errors(tmp_path, hub_server, hub_repo, local, args, message):
    HubRegistry(hub_repo).push([local.get("alpha")])
    dest = LocalRegistry(tmp_path / "dest")
    before = snapshot(dest.root)
    args = [a.format(repo=hub_repo) for a in args]
    extra = [] if "--registry" in args else ["--registry", str(dest.root)]
    code, _, err = zoo(*args, *extra)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("zoo: error: ") and message in err, err
    assert snapshot(dest.root) == before


@pytest.mark.parametrize("tamper, message", [
    (lambda idx, i: idx["experts"][i].update(name="../../etc"), "invalid name '../../etc'"),
    (lambda idx, i: idx["experts"].update({"0" * 16: idx["experts"].pop(i)}), "holds the card of expert"),
    (lambda idx, i: idx["tags"].update({"x": "f" * 16}), "which the index does not hold"),
    (lambda idx, i: idx.update(format="something-else"), "not a zoo registry index"),
])
def test_tampered_index_is_refused_with_one_line(hub_server, hub_repo, local, tamper, message):
    from huggingface_hub import CommitOperationAdd, HfApi

    HubRegistry(hub_repo).push([local.get("alpha")])
    idx = json.loads(hub_server.read_file(hub_repo, "index.json"))
    tamper(idx, local.card("alpha").id)
    HfApi().create_commit(hub_repo, [CommitOperationAdd("index.json", json.dumps(idx).encode())],
                          commit_message="tamper")
    code, _, err = zoo("list", "--registry", f"hf://{hub_repo}")
    assert code == 1 and err.count("\n") == 1 and err.startswith("zoo: error: ") and message in err, err
