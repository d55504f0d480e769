"""The local Hub test server against the real ``huggingface_hub`` client (and timm).

Everything here goes through the public client API, except a few protocol-level checks (HTTP ``Range``, LFS
pointer validation) that use ``urllib`` directly.
"""

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder
from safetensors.torch import load_file, save_file


@pytest.fixture
def api(hub_server):
    return HfApi()


@pytest.fixture(autouse=True)
def _no_server_errors(hub_server):
    yield
    assert hub_server.errors == [], "\n".join(hub_server.errors)


def _safetensors_bytes(tmp_path, seed=0, name="model.safetensors"):
    gen = torch.Generator().manual_seed(seed)
    tensors = {"weight": torch.randn(4, 3, generator=gen), "bias": torch.arange(4, dtype=torch.float32)}
    path = tmp_path / name
    save_file(tensors, str(path))
    return path.read_bytes(), tensors


def _make_folder(tmp_path, files):
    folder = tmp_path / "upload"
    for rel, data in files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return folder


def _raw(hub_server, method, path, headers=None, data=None):
    """Raw HTTP request (urllib) -> (status, headers, body)."""
    request = urllib.request.Request(hub_server.url + path, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


# ---------------------------------------------------------------------------------------------- repos


def test_whoami_and_create_repo(api, hub_server, hub_repo):
    assert api.whoami()["name"] == hub_server.user

    url = api.create_repo(hub_repo)
    assert url.repo_id == hub_repo
    assert url.startswith(hub_server.url)

    with pytest.raises(HfHubHTTPError) as exc_info:
        api.create_repo(hub_repo)
    assert exc_info.value.response.status_code == 409
    assert api.create_repo(hub_repo, exist_ok=True).repo_id == hub_repo

    info = api.model_info(hub_repo)
    assert info.id == hub_repo
    assert info.private is False
    assert len(info.sha) == 40
    assert [s.rfilename for s in info.siblings] == [".gitattributes"]  # the Hub's "initial commit"
    assert api.repo_exists(hub_repo)

    api.delete_repo(hub_repo)
    assert not api.repo_exists(hub_repo)
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo(hub_repo)
    api.delete_repo(hub_repo, missing_ok=True)


def test_create_repo_in_foreign_namespace_is_forbidden(api):
    with pytest.raises(HfHubHTTPError) as exc_info:
        api.create_repo("someone-else/repo")
    assert exc_info.value.response.status_code == 403


# ---------------------------------------------------------------------------------------------- upload


def test_upload_folder_lfs_and_regular_then_download(api, hub_server, hub_repo, tmp_path):
    weights, tensors = _safetensors_bytes(tmp_path)
    config = json.dumps({"hidden": 4}).encode()
    folder = _make_folder(tmp_path, {"model.safetensors": weights, "config.json": config})
    api.create_repo(hub_repo)

    commit = api.upload_folder(repo_id=hub_repo, folder_path=folder, commit_message="add model")
    assert commit.oid == hub_server.resolve_revision(hub_repo, "main")
    assert commit.commit_url == f"{hub_server.url}/{hub_repo}/commit/{commit.oid}"

    # LFS for the safetensors file (uploaded by PUT, sha256 checked), regular git blob for the JSON
    files = hub_server.list_files(hub_repo)
    assert files["model.safetensors"].lfs_oid == hashlib.sha256(weights).hexdigest()
    assert files["config.json"].lfs_oid is None
    lfs_uploads = hub_server.find_uploads(hub_repo, via="lfs")
    assert [u.data for u in lfs_uploads] == [weights]
    assert [(u.path, u.data) for u in hub_server.find_uploads(hub_repo, via="regular")] == [("config.json", config)]
    counts = hub_server.request_counts(hub_repo)
    assert counts[("POST", "preupload")] == 1
    assert counts[("POST", "lfs_batch")] == 1
    assert counts[("PUT", "lfs_upload")] == 1
    assert counts[("POST", "commit")] == 1

    info = api.model_info(hub_repo, files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {".gitattributes", "config.json", "model.safetensors"}
    assert siblings["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert siblings["model.safetensors"].size == len(weights)
    assert siblings["config.json"].lfs is None
    assert siblings["config.json"].blob_id == hashlib.sha1(b"blob %d\0" % len(config) + config).hexdigest()

    local_weights = hf_hub_download(hub_repo, "model.safetensors")
    assert open(local_weights, "rb").read() == weights
    loaded = load_file(local_weights)
    assert torch.equal(loaded["weight"], tensors["weight"])
    assert open(hf_hub_download(hub_repo, "config.json"), "rb").read() == config


def test_push_uploads_only_new_content(api, hub_server, hub_repo, tmp_path):
    weights, _ = _safetensors_bytes(tmp_path)
    api.create_repo(hub_repo)
    folder = _make_folder(tmp_path, {"model.safetensors": weights, "config.json": b'{"v": 1}'})
    api.upload_folder(repo_id=hub_repo, folder_path=folder)
    assert len(hub_server.find_uploads(hub_repo)) == 2

    # Unchanged weights + changed config: only the config travels (preupload tells the client the remote oids).
    (folder / "config.json").write_bytes(b'{"v": 2}')
    before = len(hub_server.find_uploads(hub_repo))
    api.upload_folder(repo_id=hub_repo, folder_path=folder)
    new = hub_server.find_uploads(hub_repo)[before:]
    assert [(u.via, u.path, u.data) for u in new] == [("regular", "config.json", b'{"v": 2}')]
    assert hub_server.read_file(hub_repo, "config.json") == b'{"v": 2}'

    # Same LFS content under a new path: the batch API reports it as present, no PUT happens.
    hub_server.clear_requests()
    api.upload_file(path_or_fileobj=weights, path_in_repo="copy/model.safetensors", repo_id=hub_repo)
    assert hub_server.find_requests("lfs_batch", repo_id=hub_repo)
    assert not hub_server.find_requests("lfs_upload", repo_id=hub_repo)
    assert hub_server.read_file(hub_repo, "copy/model.safetensors") == weights

    # Nothing changed at all: the client skips the commit.
    commits_before = len(api.list_repo_commits(hub_repo))
    api.upload_folder(repo_id=hub_repo, folder_path=folder)
    assert len(api.list_repo_commits(hub_repo)) == commits_before


def test_multipart_lfs_upload(api, hub_server, hub_repo):
    data = bytes(range(256)) * 14  # 3584 bytes, binary
    api.create_repo(hub_repo)
    hub_server.lfs_multipart_chunk_size = 1000
    try:
        api.upload_file(path_or_fileobj=data, path_in_repo="blob.bin", repo_id=hub_repo)
    finally:
        hub_server.lfs_multipart_chunk_size = None
    counts = hub_server.request_counts(hub_repo)
    assert counts[("PUT", "lfs_upload_part")] == 4
    assert counts[("POST", "lfs_complete")] == 1
    assert open(hf_hub_download(hub_repo, "blob.bin"), "rb").read() == data


def test_commit_with_unknown_lfs_oid_is_rejected(api, hub_server, hub_repo):
    api.create_repo(hub_repo)
    payload = b"\n".join(
        json.dumps(line).encode()
        for line in (
            {"key": "header", "value": {"summary": "sneaky", "description": ""}},
            {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "ab" * 32, "size": 3}},
        )
    )
    status, headers, body = _raw(
        hub_server,
        "POST",
        f"/api/models/{hub_repo}/commit/main",
        headers={"Authorization": f"Bearer {hub_server.token}", "Content-Type": "application/x-ndjson"},
        data=payload,
    )
    assert status == 400
    assert "does not exist" in json.loads(body)["error"]
    assert [s.rfilename for s in api.model_info(hub_repo).siblings] == [".gitattributes"]


# ---------------------------------------------------------------------------------------------- revisions


def test_revisions_branch_tag_sha_and_deletion(api, hub_server, hub_repo, tmp_path):
    weights, _ = _safetensors_bytes(tmp_path)
    api.create_repo(hub_repo)
    first = api.create_commit(
        hub_repo,
        operations=[
            CommitOperationAdd("model.safetensors", weights),
            CommitOperationAdd("config.json", b'{"version": 1}'),
        ],
        commit_message="first",
    )
    api.create_tag(hub_repo, tag="v1", revision=first.oid)
    second = api.create_commit(
        hub_repo,
        operations=[CommitOperationDelete("config.json"), CommitOperationAdd("notes.txt", b"hello")],
        commit_message="second",
        commit_description="drop config",
        parent_commit=first.oid,
    )
    assert second.oid != first.oid

    def names(revision):
        return sorted(s.rfilename for s in api.model_info(hub_repo, revision=revision).siblings)

    assert api.model_info(hub_repo).sha == second.oid
    assert api.model_info(hub_repo, revision="main").sha == second.oid
    assert api.model_info(hub_repo, revision="v1").sha == first.oid
    assert api.model_info(hub_repo, revision=first.oid).sha == first.oid
    assert api.model_info(hub_repo, revision=first.oid[:10]).sha == first.oid  # short sha
    assert names("main") == [".gitattributes", "model.safetensors", "notes.txt"]
    assert names(first.oid) == [".gitattributes", "config.json", "model.safetensors"]

    # Old commit / tag still serve the deleted file with its old bytes.
    assert open(hf_hub_download(hub_repo, "config.json", revision=first.oid), "rb").read() == b'{"version": 1}'
    assert open(hf_hub_download(hub_repo, "config.json", revision="v1"), "rb").read() == b'{"version": 1}'
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(hub_repo, "config.json")

    commits = api.list_repo_commits(hub_repo)
    assert [c.commit_id for c in commits[:2]] == [second.oid, first.oid]
    assert [c.title for c in commits] == ["second", "first", "initial commit"]
    assert commits[0].message == "drop config"
    assert commits[0].authors == [hub_server.user]

    # A stale parent commit is refused.
    with pytest.raises(HfHubHTTPError) as exc_info:
        api.create_commit(
            hub_repo, operations=[CommitOperationAdd("x.txt", b"x")], commit_message="stale", parent_commit=first.oid
        )
    assert exc_info.value.response.status_code == 412


def test_tags_branches_and_refs(api, hub_server, hub_repo):
    api.create_repo(hub_repo)
    first = api.upload_file(path_or_fileobj=b"one", path_in_repo="a.txt", repo_id=hub_repo)
    api.create_tag(hub_repo, tag="v1.0", tag_message="first release")
    with pytest.raises(HfHubHTTPError) as exc_info:
        api.create_tag(hub_repo, tag="v1.0")
    assert exc_info.value.response.status_code == 409
    api.create_tag(hub_repo, tag="v1.0", exist_ok=True)

    api.create_branch(hub_repo, branch="feature/x")
    on_branch = api.upload_file(path_or_fileobj=b"two", path_in_repo="a.txt", repo_id=hub_repo, revision="feature/x")

    refs = api.list_repo_refs(hub_repo)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": first.oid, "feature/x": on_branch.oid}
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [("v1.0", "refs/tags/v1.0", first.oid)]
    assert open(hf_hub_download(hub_repo, "a.txt", revision="feature/x"), "rb").read() == b"two"
    assert open(hf_hub_download(hub_repo, "a.txt", revision="v1.0"), "rb").read() == b"one"

    api.delete_tag(hub_repo, tag="v1.0")
    api.delete_branch(hub_repo, branch="feature/x")
    refs = api.list_repo_refs(hub_repo)
    assert refs.tags == [] and [b.name for b in refs.branches] == ["main"]
    with pytest.raises(RevisionNotFoundError):
        api.model_info(hub_repo, revision="v1.0")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(hub_repo, "a.txt", revision="feature/x", force_download=True)
    with pytest.raises(RevisionNotFoundError):
        api.delete_tag(hub_repo, tag="v1.0")


def test_pull_request_revision_is_quoted(api, hub_server, hub_repo):
    api.create_repo(hub_repo)
    api.upload_file(path_or_fileobj=b"base", path_in_repo="a.txt", repo_id=hub_repo)
    pr = api.upload_file(path_or_fileobj=b"proposal", path_in_repo="a.txt", repo_id=hub_repo, create_pr=True)
    assert pr.pr_revision == "refs/pr/1" and pr.pr_num == 1
    assert open(hf_hub_download(hub_repo, "a.txt", revision="refs/pr/1"), "rb").read() == b"proposal"
    assert open(hf_hub_download(hub_repo, "a.txt"), "rb").read() == b"base"
    assert [p.target_commit for p in api.list_repo_refs(hub_repo, include_pull_requests=True).pull_requests] == [
        pr.oid
    ]
    # the client sends the revision percent-encoded as a single path segment
    pr_downloads = [r for r in hub_server.find_requests("resolve", repo_id=hub_repo) if r.revision == "refs/pr/1"]
    assert pr_downloads and all("/resolve/refs%2Fpr%2F1/" in r.raw_path for r in pr_downloads)


# ---------------------------------------------------------------------------------------------- listing


def test_list_repo_tree_and_paths_info(api, hub_server, hub_repo, tmp_path):
    weights, _ = _safetensors_bytes(tmp_path)
    api.create_repo(hub_repo)
    folder = _make_folder(
        tmp_path,
        {"model.safetensors": weights, "configs/a.json": b"{}", "configs/deep/b.json": b"[]", "README.txt": b"hi"},
    )
    commit = api.upload_folder(repo_id=hub_repo, folder_path=folder)

    entries = {e.path: e for e in api.list_repo_tree(hub_repo, recursive=True)}
    assert set(entries) == {
        ".gitattributes", "README.txt", "model.safetensors", "configs", "configs/a.json", "configs/deep",
        "configs/deep/b.json",
    }
    assert isinstance(entries["configs/deep"], RepoFolder)
    weights_entry = entries["model.safetensors"]
    assert isinstance(weights_entry, RepoFile)
    assert weights_entry.size == len(weights)
    assert weights_entry.lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert entries["README.txt"].lfs is None and entries["README.txt"].size == 2

    assert {e.path for e in api.list_repo_tree(hub_repo)} == {
        ".gitattributes", "README.txt", "model.safetensors", "configs",
    }
    assert {e.path for e in api.list_repo_tree(hub_repo, path_in_repo="configs")} == {"configs/a.json", "configs/deep"}
    assert sorted(api.list_repo_files(hub_repo)) == sorted(p for p, e in entries.items() if isinstance(e, RepoFile))
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(hub_repo, path_in_repo="nope"))

    expanded = {e.path: e for e in api.list_repo_tree(hub_repo, path_in_repo="configs", expand=True)}
    assert expanded["configs/a.json"].last_commit.oid == commit.oid

    # Pagination through the Link header.
    hub_server.tree_page_size = 2
    hub_server.clear_requests()
    try:
        paged = [e.path for e in api.list_repo_tree(hub_repo, recursive=True)]
    finally:
        hub_server.tree_page_size = 1000
    assert sorted(paged) == sorted(entries)
    assert len(hub_server.find_requests("tree", repo_id=hub_repo)) == 4

    infos = api.get_paths_info(hub_repo, ["model.safetensors", "configs", "missing.txt"])
    assert [(type(i).__name__, i.path) for i in infos] == [("RepoFile", "model.safetensors"), ("RepoFolder", "configs")]
    assert api.file_exists(hub_repo, "configs/deep/b.json")
    assert not api.file_exists(hub_repo, "configs/deep/c.json")


# ---------------------------------------------------------------------------------------------- download


def test_snapshot_download_allow_patterns_fetches_only_matches(api, hub_server, hub_repo, tmp_path):
    weights, _ = _safetensors_bytes(tmp_path)
    files = {"model.safetensors": weights, "config.json": b'{"a": 1}', "sub/extra.json": b"[1]", "notes.md": b"# x"}
    api.create_repo(hub_repo)
    api.upload_folder(repo_id=hub_repo, folder_path=_make_folder(tmp_path, files))
    hub_server.clear_requests()

    local = snapshot_download(hub_repo, allow_patterns=["*.json"], cache_dir=tmp_path / "cache")
    downloaded = {p.relative_to(local).as_posix() for p in Path(local).glob("**/*") if p.is_file()}
    assert downloaded == {"config.json", "sub/extra.json"}
    assert open(f"{local}/sub/extra.json", "rb").read() == b"[1]"

    resolved = hub_server.find_requests("resolve", repo_id=hub_repo)
    assert {r.filename for r in resolved} == {"config.json", "sub/extra.json"}
    assert {r.method for r in resolved} == {"HEAD", "GET"}
    assert sum(r.method == "GET" for r in resolved) == 2
    # how the client lists files: repo info for the sha, then one recursive tree listing at that sha
    assert [r.kind for r in hub_server.find_requests(repo_id=hub_repo) if r.kind != "resolve"] == ["repo_info", "tree"]
    sha = hub_server.resolve_revision(hub_repo)
    assert hub_server.find_requests("tree", repo_id=hub_repo)[0].revision == sha

    # Second call with everything cached: metadata calls only, no GET.
    hub_server.clear_requests()
    snapshot_download(hub_repo, allow_patterns=["*.json"], cache_dir=tmp_path / "cache")
    assert not [r for r in hub_server.find_requests("resolve", repo_id=hub_repo) if r.method == "GET"]


def test_range_requests_and_resolve_headers(api, hub_server, hub_repo, tmp_path):
    weights, _ = _safetensors_bytes(tmp_path)
    api.create_repo(hub_repo)
    api.upload_file(path_or_fileobj=weights, path_in_repo="model.safetensors", repo_id=hub_repo)
    api.upload_file(path_or_fileobj=b"0123456789", path_in_repo="digits.txt", repo_id=hub_repo)
    sha = hub_server.resolve_revision(hub_repo)

    status, headers, body = _raw(hub_server, "HEAD", f"/{hub_repo}/resolve/main/model.safetensors")
    assert status == 200 and body == b""
    assert headers["X-Repo-Commit"] == sha
    assert headers["X-Linked-Etag"] == f'"{hashlib.sha256(weights).hexdigest()}"'
    assert headers["X-Linked-Size"] == headers["Content-Length"] == str(len(weights))
    assert headers["Accept-Ranges"] == "bytes"

    status, headers, _ = _raw(hub_server, "HEAD", f"/{hub_repo}/resolve/main/digits.txt")
    assert headers["ETag"] == f'"{hashlib.sha1(b"blob 10" + bytes(1) + b"0123456789").hexdigest()}"'
    assert "X-Linked-Etag" not in headers

    path = f"/{hub_repo}/resolve/{sha}/digits.txt"
    status, headers, body = _raw(hub_server, "GET", path, {"Range": "bytes=2-5"})
    assert (status, body, headers["Content-Range"]) == (206, b"2345", "bytes 2-5/10")
    status, headers, body = _raw(hub_server, "GET", path, {"Range": "bytes=7-"})
    assert (status, body, headers["Content-Range"]) == (206, b"789", "bytes 7-9/10")
    status, _, body = _raw(hub_server, "GET", path, {"Range": "bytes=-3"})
    assert (status, body) == (206, b"789")
    status, headers, _ = _raw(hub_server, "GET", path, {"Range": "bytes=10-"})
    assert (status, headers["Content-Range"]) == (416, "bytes */10")
    status, _, body = _raw(hub_server, "GET", path)
    assert (status, body) == (200, b"0123456789")


def test_interrupted_download_resumes_with_range(api, hub_server, hub_repo):
    # huggingface_hub reads the body in DOWNLOAD_CHUNK_SIZE (10 MiB) pieces and only counts bytes it has written:
    # a connection lost before the first 10 MiB restarts from scratch, later it resumes with `Range: bytes=N-`.
    chunk = 10 * 1024 * 1024
    big = bytes(range(256)) * (11 * 4096)  # 11 MiB (>= 10 MB: LFS)
    small = bytes(range(256)) * 64  # 16 KiB, binary: LFS
    api.create_repo(hub_repo)
    api.create_commit(
        hub_repo,
        operations=[CommitOperationAdd("big.bin", big), CommitOperationAdd("small.bin", small)],
        commit_message="data",
    )
    hub_server.inject_truncated_download(hub_repo, "big.bin", after_bytes=chunk + 4096)
    hub_server.inject_truncated_download(hub_repo, "small.bin", after_bytes=5000)
    hub_server.clear_requests()

    assert open(hf_hub_download(hub_repo, "big.bin"), "rb").read() == big
    assert open(hf_hub_download(hub_repo, "small.bin"), "rb").read() == small

    def gets(filename):
        return [
            (r.range, r.status)
            for r in hub_server.find_requests("resolve", repo_id=hub_repo, method="GET", filename=filename)
        ]

    assert gets("big.bin") == [(None, 200), (f"bytes={chunk}-", 206)]
    assert gets("small.bin") == [(None, 200), (None, 200)]


# ---------------------------------------------------------------------------------------------- errors & auth


def test_errors_map_to_client_exceptions(api, hub_server, hub_repo):
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(hub_repo)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub_repo, "config.json")
    with pytest.raises(RepositoryNotFoundError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=hub_repo)

    api.create_repo(hub_repo)
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=hub_repo)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(hub_repo, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(hub_repo, "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(hub_repo, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=hub_repo, revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(hub_repo, "missing.json")
    with pytest.raises(EntryNotFoundError):
        api.delete_file("missing.json", repo_id=hub_repo)
    assert not api.file_exists(hub_repo, "missing.json")
    assert api.file_exists(hub_repo, "config.json")


def test_private_repo_requires_token(api, hub_server, hub_repo, tmp_path):
    api.create_repo(hub_repo, private=True)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id=hub_repo)
    assert api.model_info(hub_repo).private is True
    assert open(hf_hub_download(hub_repo, "s.txt"), "rb").read() == b"secret"

    anonymous = HfApi(token=False)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.model_info(hub_repo)
    assert not anonymous.repo_exists(hub_repo)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub_repo, "s.txt", token=False, cache_dir=tmp_path / "anon")
    # With force_download=True the client wraps the HEAD error into a ValueError.
    with pytest.raises(ValueError) as exc_info:
        hf_hub_download(hub_repo, "s.txt", token=False, cache_dir=tmp_path / "anon", force_download=True)
    assert isinstance(exc_info.value.__cause__, RepositoryNotFoundError)
    # Without it, a file already in the cache is served even though the HEAD call was refused.
    cached = hf_hub_download(hub_repo, "s.txt", token=False)
    assert open(cached, "rb").read() == b"secret"
    with pytest.raises(RepositoryNotFoundError):
        list(anonymous.list_repo_tree(hub_repo))

    # A wrong token is an authentication error, not "repo not found".
    with pytest.raises(HfHubHTTPError) as exc_info:
        HfApi(token="hf_wrong").model_info(hub_repo)
    assert exc_info.value.response.status_code == 401
    assert not isinstance(exc_info.value, RepositoryNotFoundError)
    with pytest.raises(HfHubHTTPError):
        HfApi(token="hf_wrong").whoami()

    api.update_repo_settings(hub_repo, private=False)
    assert anonymous.model_info(hub_repo).private is False


def test_gated_repo(api, hub_server, hub_repo):
    api.create_repo(hub_repo)
    api.upload_file(path_or_fileobj=b"w", path_in_repo="w.txt", repo_id=hub_repo)
    hub_server.set_gated(hub_repo, "auto")
    assert HfApi(token=False).model_info(hub_repo).gated == "auto"  # metadata stays public
    with pytest.raises(GatedRepoError):
        hf_hub_download(hub_repo, "w.txt", token=False)
    assert open(hf_hub_download(hub_repo, "w.txt"), "rb").read() == b"w"  # owner


# ---------------------------------------------------------------------------------------------- timm


def test_timm_create_model_from_local_hub(api, hub_server, hub_repo, tmp_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=5).eval()
    config = {
        "architecture": "resnet10t",
        "num_classes": 5,
        "num_features": model.num_features,
        "pretrained_cfg": {
            "input_size": [3, 64, 64],
            "interpolation": "bicubic",
            "crop_pct": 0.95,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "num_classes": 5,
            "first_conv": "conv1.0",
            "classifier": "fc",
        },
    }
    folder = tmp_path / "timm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    api.create_repo(hub_repo)
    api.upload_folder(repo_id=hub_repo, folder_path=folder)
    assert hub_server.list_files(hub_repo)["model.safetensors"].is_lfs
    hub_server.clear_requests()

    loaded = timm.create_model(f"hf-hub:{hub_repo}", pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = model(x), loaded(x)
    assert actual.shape == (2, 5)
    assert torch.equal(expected, actual)
    fetched = {r.filename for r in hub_server.find_requests("resolve", repo_id=hub_repo, method="GET")}
    assert fetched == {"config.json", "model.safetensors"}

    # Control: a different model gives different outputs (the comparison above can fail).
    other = timm.create_model("resnet10t", num_classes=5).eval()
    with torch.no_grad():
        assert not torch.allclose(other(x), expected)
