"""A loopback Hugging Face Hub server for tests.

``HubServer`` speaks enough of the Hub's HTTP API for the real ``huggingface_hub`` client (2.4.x, with
``HF_HUB_DISABLE_XET=1``) and ``timm.create_model("hf-hub:...")`` to work against it: repository creation and
deletion, repo info, tree listings, paths-info, preupload, the git-LFS "basic" (and multipart) transfer, NDJSON
commits, file downloads with ``Range`` support, branches, tags, commit history, private and gated repositories.

Everything lives in memory.  Only the standard library is used.  The server binds to 127.0.0.1 only.

Usage::

    server = HubServer(port=0, token="hf_test", user="zoo-test")
    server.start()
    ...  # point HF_ENDPOINT at server.url *before* importing huggingface_hub
    server.stop()

For assertions, the server keeps:

* ``server.requests``: one :class:`RequestRecord` per HTTP request (method, ``kind`` such as ``"resolve"``,
  ``"tree"``, ``"commit"``, ``"lfs_upload"`` ..., repo id, revision, file name, status, ``Range`` header).
  See :meth:`HubServer.find_requests` and :meth:`HubServer.request_counts`.
* ``server.uploads``: one :class:`UploadRecord` per file content received (LFS PUT or regular file in a commit),
  with the bytes.
* ``server.errors``: tracebacks of unexpected exceptions in the server (should stay empty).

Error responses carry the ``X-Error-Code`` / ``X-Error-Message`` headers and a JSON ``{"error": ...}`` body the same
way the Hub does, so the client raises ``RepositoryNotFoundError`` (code ``RepoNotFound``), ``GatedRepoError``
(``GatedRepo``), ``RevisionNotFoundError`` (``RevisionNotFound``) and ``RemoteEntryNotFoundError``
(``EntryNotFound``).  Note that the client only maps a *bare* 401 to ``RepositoryNotFoundError`` for ``https``
endpoints, so this server always sends the explicit code.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import secrets
import socket
import threading
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

__all__ = ["HubServer", "RequestRecord", "UploadRecord", "FileEntry", "Commit", "Repo"]

# URL plural -> repo type, and repo type -> URL prefix used in web / resolve / git URLs.
_API_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}

LFS_POINTER_TEMPLATE = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"

# Same patterns as the `.gitattributes` the Hub puts in the initial commit of a new repo.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
        "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
        "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
        "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
).encode()

# Files at least this big are stored with LFS even if they look like text (the Hub uses 10 MB).
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024


def git_blob_sha1(data: bytes) -> str:
    """Git object id of a blob (what the Hub reports as `oid`/`blobId` and as ETag of regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


# ----------------------------------------------------------------------------------------------------------------
# Data model
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One file in a commit's tree."""

    size: int
    blob_id: str  # git blob sha1: of the content for regular files, of the LFS pointer for LFS files
    lfs_oid: str | None = None  # sha256 of the content, for LFS files
    pointer_size: int | None = None

    @property
    def is_lfs(self) -> bool:
        return self.lfs_oid is not None

    @property
    def etag(self) -> str:
        """What the Hub sends as (X-Linked-)ETag: sha256 for LFS files, git blob sha1 otherwise."""
        return self.lfs_oid if self.lfs_oid is not None else self.blob_id


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: datetime
    files: dict[str, FileEntry]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: datetime
    uid: str
    gated: str | bool = False  # False, "auto" or "manual"
    gated_access: set[str] = field(default_factory=set)  # user names granted access to a gated repo
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    tags: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    tag_messages: dict[str, str] = field(default_factory=dict)
    pull_requests: dict[int, str] = field(default_factory=dict)  # num -> commit oid (ref refs/pr/<num>)
    blobs: dict[str, bytes] = field(default_factory=dict)  # git blob sha1 -> content (regular files)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content (LFS storage)

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]

    def content(self, entry: FileEntry) -> bytes:
        return self.lfs_objects[entry.lfs_oid] if entry.lfs_oid is not None else self.blobs[entry.blob_id]


@dataclass
class User:
    name: str
    token: str
    orgs: tuple[str, ...] = ()


@dataclass
class RequestRecord:
    """One HTTP request received by the server."""

    method: str
    kind: str  # "resolve", "repo_info", "tree", "paths_info", "preupload", "commit", "lfs_batch", ...
    path: str  # URL path, percent-decoded
    raw_path: str  # URL path as sent (percent-encoded)
    query: dict[str, list[str]]
    repo_type: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    filename: str | None = None
    status: int | None = None
    range: str | None = None  # value of the Range request header, if any
    user: str | None = None  # authenticated user name, if a valid token was sent


@dataclass
class UploadRecord:
    """File content received by the server (LFS upload or regular file in a commit)."""

    repo_type: str
    repo_id: str
    via: str  # "lfs" (PUT to the LFS upload URL) or "regular" (base64 in the commit payload)
    oid: str  # sha256 for "lfs", git blob sha1 for "regular"
    path: str | None  # path in repo, known for "regular" uploads only
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


class HubError(Exception):
    """Raised inside route handlers; turned into a Hub-like error response."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    truncate_after: int | None = None  # fault injection: close the connection after this many body bytes


def _json_response(data, status: int = 200, content_type: str = "application/json; charset=utf-8") -> _Response:
    return _Response(status=status, body=json.dumps(data).encode(), headers={"Content-Type": content_type})


def _error_response(err: HubError) -> _Response:
    headers = {"Content-Type": "application/json; charset=utf-8", "X-Error-Message": err.message}
    if err.code is not None:
        headers["X-Error-Code"] = err.code
    headers.update(err.headers)
    return _Response(status=err.status, body=json.dumps({"error": err.message}).encode(), headers=headers)


@dataclass
class _Exchange:
    """A parsed incoming request, plus what gets recorded about it."""

    method: str
    path: str  # raw (percent-encoded) path
    segments: list[str]  # percent-decoded path segments
    raw_segments: list[str]
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    user: User | None
    bad_token: bool
    record: RequestRecord

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self):
        try:
            return json.loads(self.body or b"null")
        except ValueError as e:
            raise HubError(400, f"Invalid JSON body: {e}") from e


# ----------------------------------------------------------------------------------------------------------------
# HTTP plumbing
# ----------------------------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive connections must not block stop()
    allow_reuse_address = True

    def __init__(self, address, handler, hub: "HubServer"):
        self.hub = hub
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ZooHubTestServer/1.0"
    timeout = 120  # idle keep-alive connections are dropped after this many seconds

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr logging
        pass

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_PATCH(self):
        self._dispatch()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until empty line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        hub: HubServer = self.server.hub  # type: ignore[attr-defined]
        body = self._read_body()
        response = hub._handle(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        self._write(response)

    def _write(self, response: _Response) -> None:
        self.send_response(response.status)
        headers = dict(response.headers)
        headers.setdefault("Content-Length", str(len(response.body)))
        headers.setdefault("X-Request-Id", uuid.uuid4().hex)
        for name, value in headers.items():
            self.send_header(name, value)
        if response.truncate_after is not None:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command == "HEAD":
            return
        if response.truncate_after is not None:
            self.wfile.write(response.body[: response.truncate_after])
            self.wfile.flush()
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(response.body)


# ----------------------------------------------------------------------------------------------------------------
# The server
# ----------------------------------------------------------------------------------------------------------------


class HubServer:
    """In-memory Hugging Face Hub speaking HTTP on 127.0.0.1.

    Args:
        port: TCP port to bind (0 = pick a free one).
        token: bearer token of the default user.
        user: name of the default user (its namespace is writable with ``token``).
        orgs: organisations the default user belongs to (writable namespaces too).
        initial_gitattributes: like the Hub, start each new repo with an "initial commit" holding a
            ``.gitattributes`` that tracks the usual binary extensions with LFS.
        tree_page_size: page size of ``/tree`` listings (the Hub uses 1000; 50 with ``expand``).
        commits_page_size: page size of ``/commits`` listings.
        lfs_multipart_chunk_size: if set, LFS objects bigger than this are uploaded with the Hub's multipart
            transfer (parts of this size) instead of a single PUT.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        token: str = "hf_zoo_test_token",
        user: str = "zoo-test",
        orgs: tuple[str, ...] | list[str] = (),
        initial_gitattributes: bool = True,
        tree_page_size: int = 1000,
        commits_page_size: int = 50,
        lfs_multipart_chunk_size: int | None = None,
    ):
        self._requested_port = port
        self.token = token
        self.user = user
        self.initial_gitattributes = initial_gitattributes
        self.tree_page_size = tree_page_size
        self.commits_page_size = commits_page_size
        self.lfs_multipart_chunk_size = lfs_multipart_chunk_size

        self._lock = threading.RLock()
        self.users: dict[str, User] = {}
        self.add_user(user, token, orgs=orgs)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[RequestRecord] = []
        self.uploads: list[UploadRecord] = []
        self.errors: list[str] = []

        self._tickets: dict[str, dict] = {}  # LFS upload tickets
        self._faults: list[dict] = []
        self._commit_counter = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "HubServer":
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer(("127.0.0.1", self._requested_port), _Handler, self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="HubServer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_all_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("HubServer is not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ helpers for tests

    def add_user(self, name: str, token: str, orgs: tuple[str, ...] | list[str] = ()) -> None:
        """Register another user (``Authorization: Bearer <token>``) with write access to ``name`` and ``orgs``."""
        with self._lock:
            self.users[token] = User(name=name, token=token, orgs=tuple(orgs))

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def find_requests(
        self,
        kind: str | None = None,
        *,
        method: str | None = None,
        repo_id: str | None = None,
        filename: str | None = None,
    ) -> list[RequestRecord]:
        """Requests matching all the given filters."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (kind is None or r.kind == kind)
                and (method is None or r.method == method)
                and (repo_id is None or r.repo_id == repo_id)
                and (filename is None or r.filename == filename)
            ]

    def request_counts(self, repo_id: str | None = None) -> Counter:
        """``Counter`` of ``(method, kind)`` over all requests (optionally for one repo)."""
        with self._lock:
            return Counter((r.method, r.kind) for r in self.requests if repo_id is None or r.repo_id == repo_id)

    def find_uploads(self, repo_id: str | None = None, via: str | None = None) -> list[UploadRecord]:
        with self._lock:
            return [
                u for u in self.uploads if (repo_id is None or u.repo_id == repo_id) and (via is None or u.via == via)
            ]

    def get_repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        with self._lock:
            return self.repos[(repo_type, repo_id)]

    def resolve_revision(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        with self._lock:
            oid = self._resolve(self.get_repo(repo_id, repo_type), revision)
            if oid is None:
                raise KeyError(revision)
            return oid

    def list_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, FileEntry]:
        with self._lock:
            repo = self.get_repo(repo_id, repo_type)
            return dict(repo.commits[self.resolve_revision(repo_id, revision, repo_type)].files)

    def read_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        with self._lock:
            repo = self.get_repo(repo_id, repo_type)
            return repo.content(self.list_files(repo_id, revision, repo_type)[path])

    def create_repo_direct(
        self,
        repo_id: str,
        *,
        repo_type: str = "model",
        private: bool = False,
        files: dict[str, bytes] | None = None,
        lfs: bool | None = None,
    ) -> Repo:
        """Create a repo without going through HTTP (test set-up shortcut), optionally with a first commit."""
        with self._lock:
            repo = self._create_repo(repo_type, repo_id, private=private)
            if files:
                self.commit_direct(repo_id, files, repo_type=repo_type, lfs=lfs)
            return repo

    def commit_direct(
        self,
        repo_id: str,
        files: dict[str, bytes | None],
        *,
        repo_type: str = "model",
        branch: str = "main",
        message: str = "Direct commit",
        lfs: bool | None = None,
    ) -> str:
        """Commit ``files`` (``None`` value = delete) on ``branch`` without HTTP. Returns the commit oid.

        ``lfs=None`` picks LFS like the Hub would (``.gitattributes`` patterns, binary sample, size).
        """
        with self._lock:
            repo = self.get_repo(repo_id, repo_type)
            head = repo.branches[branch]
            tree = dict(repo.commits[head].files)
            for path, data in files.items():
                if data is None:
                    tree.pop(path, None)
                    continue
                use_lfs = lfs
                if use_lfs is None:
                    use_lfs = self._upload_mode(repo, tree, path, data[:512], len(data)) == "lfs"
                tree[path] = self._store_lfs(repo, data) if use_lfs else self._store_regular(repo, data)
            commit = self._new_commit(repo, head, message, "", self.user, tree)
            repo.branches[branch] = commit.oid
            return commit.oid

    def set_gated(self, repo_id: str, gated: str | bool = "auto", *, repo_type: str = "model") -> None:
        with self._lock:
            self.get_repo(repo_id, repo_type).gated = gated

    def grant_access(self, repo_id: str, user: str, *, repo_type: str = "model") -> None:
        """Grant ``user`` access to a gated repo."""
        with self._lock:
            self.get_repo(repo_id, repo_type).gated_access.add(user)

    def inject_truncated_download(self, repo_id: str, filename: str, after_bytes: int, times: int = 1) -> None:
        """Make the next ``times`` GET /resolve of ``filename`` close the connection after ``after_bytes`` bytes.

        The response still announces the full ``Content-Length``, so the client sees a truncated body and (in
        huggingface_hub) resumes with a ``Range: bytes=<after_bytes>-`` request.
        """
        with self._lock:
            self._faults.append(
                {"repo_id": repo_id, "filename": filename, "after": after_bytes, "remaining": times}
            )

    # ------------------------------------------------------------------ request entry point

    def _handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Response:
        split = urlsplit(raw_path)
        raw_segments = split.path.split("/")[1:]
        segments = [unquote(s) for s in raw_segments]
        query = parse_qs(split.query, keep_blank_values=True)

        user, bad_token = None, False
        auth = headers.get("authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            user = self.users.get(value.strip()) if scheme.lower() == "bearer" else None
            bad_token = user is None

        record = RequestRecord(
            method=method,
            kind="unknown",
            path=unquote(split.path),
            raw_path=split.path,
            query=query,
            range=headers.get("range"),
            user=user.name if user else None,
        )
        ex = _Exchange(method, split.path, segments, raw_segments, query, headers, body, user, bad_token, record)
        with self._lock:
            self.requests.append(record)
        try:
            with self._lock:
                response = self._route(ex)
        except HubError as err:
            response = _error_response(err)
        except Exception:  # noqa: BLE001 - report any server bug to the test through `errors`
            tb = traceback.format_exc()
            with self._lock:
                self.errors.append(tb)
            response = _json_response({"error": "Internal test server error:\n" + tb}, status=500)
        record.status = response.status
        return response

    # ------------------------------------------------------------------ routing

    def _route(self, ex: _Exchange) -> _Response:
        segs = ex.segments
        m = ex.method
        if not segs or segs == [""]:
            raise HubError(404, "Not Found")

        if segs[0] == "api":
            rest = segs[1:]
            if rest == ["whoami-v2"] and m == "GET":
                return self._whoami(ex)
            if rest == ["repos", "create"] and m == "POST":
                return self._create_repo_route(ex)
            if rest == ["repos", "delete"] and m == "DELETE":
                return self._delete_repo_route(ex)
            if rest == ["repos", "move"] and m == "POST":
                return self._move_repo_route(ex)
            if rest == ["validate-yaml"] and m == "POST":
                ex.record.kind = "validate_yaml"
                return _json_response({"errors": [], "warnings": []})
            if len(rest) >= 3 and rest[0] in _API_REPO_TYPES:
                return self._api_repo_route(ex, _API_REPO_TYPES[rest[0]], f"{rest[1]}/{rest[2]}", rest[3:])
            raise HubError(404, "Not Found")

        if segs[0] == "__lfs__":
            return self._lfs_storage_route(ex, segs[1:])

        # Web / git routes: [datasets/|spaces/]<ns>/<name>/resolve/... and <ns>/<name>.git/info/lfs/objects/batch
        repo_type = "model"
        if segs[0] in ("datasets", "spaces") and len(segs) >= 4 and (
            segs[2].endswith(".git") or segs[3] in ("resolve", "commit", "tree", "blob")
        ):
            repo_type = _API_REPO_TYPES[segs[0]]
            segs = segs[1:]
        if len(segs) >= 3:
            namespace, name, rest = segs[0], segs[1], segs[2:]
            if name.endswith(".git") and rest == ["info", "lfs", "objects", "batch"] and m == "POST":
                return self._lfs_batch(ex, repo_type, f"{namespace}/{name[:-4]}")
            if rest[0] == "resolve" and m in ("GET", "HEAD") and len(rest) >= 3:
                revision, path_parts = self._take_revision(rest[1:])
                return self._resolve_route(ex, repo_type, f"{namespace}/{name}", revision, "/".join(path_parts))
        raise HubError(404, "Not Found")

    @staticmethod
    def _take_revision(parts: list[str]) -> tuple[str, list[str]]:
        """Split ``[revision, *rest]``; an unquoted ``refs/pr/1`` spans three segments."""
        if parts[0] == "refs" and len(parts) >= 3 and parts[1] in ("pr", "convert", "heads", "tags"):
            return "/".join(parts[:3]), parts[3:]
        return parts[0], parts[1:]

    def _api_repo_route(self, ex: _Exchange, repo_type: str, repo_id: str, rest: list[str]) -> _Response:
        m = ex.method
        ex.record.repo_type, ex.record.repo_id = repo_type, repo_id
        if not rest and m == "GET":
            return self._repo_info(ex, repo_type, repo_id, None)
        head = rest[0] if rest else ""
        if head == "revision" and len(rest) >= 2 and m == "GET":
            revision, _ = self._take_revision(rest[1:])
            return self._repo_info(ex, repo_type, repo_id, revision)
        if head == "tree" and len(rest) >= 2 and m == "GET":
            revision, path_parts = self._take_revision(rest[1:])
            return self._tree(ex, repo_type, repo_id, revision, "/".join(path_parts).strip("/"))
        if head == "paths-info" and len(rest) >= 2 and m == "POST":
            return self._paths_info(ex, repo_type, repo_id, self._take_revision(rest[1:])[0])
        if head == "preupload" and len(rest) >= 2 and m == "POST":
            return self._preupload(ex, repo_type, repo_id, self._take_revision(rest[1:])[0])
        if head == "commit" and len(rest) >= 2 and m == "POST":
            return self._commit(ex, repo_type, repo_id, self._take_revision(rest[1:])[0])
        if head == "refs" and len(rest) == 1 and m == "GET":
            return self._refs(ex, repo_type, repo_id)
        if head == "commits" and len(rest) >= 2 and m == "GET":
            return self._commits(ex, repo_type, repo_id, self._take_revision(rest[1:])[0])
        if head == "tag" and len(rest) >= 2 and m in ("POST", "DELETE"):
            name = "/".join(rest[1:])
            if m == "POST":
                return self._create_tag(ex, repo_type, repo_id, name)
            return self._delete_tag(ex, repo_type, repo_id, name)
        if head == "branch" and len(rest) >= 2 and m in ("POST", "DELETE"):
            name = "/".join(rest[1:])
            if m == "POST":
                return self._create_branch(ex, repo_type, repo_id, name)
            return self._delete_branch(ex, repo_type, repo_id, name)
        if head == "settings" and len(rest) == 1 and m == "PUT":
            return self._settings(ex, repo_type, repo_id)
        raise HubError(404, "Not Found")

    # ------------------------------------------------------------------ auth and lookup

    def _require_user(self, ex: _Exchange) -> User:
        if ex.bad_token:
            raise HubError(401, "Invalid credentials in Authorization header")
        if ex.user is None:
            raise HubError(401, "Invalid username or password.")
        return ex.user

    @staticmethod
    def _can_write(user: User | None, namespace: str) -> bool:
        return user is not None and (namespace == user.name or namespace in user.orgs)

    def _repo_not_found(self, ex: _Exchange) -> HubError:
        # The Hub answers 401 to anonymous callers and 404 to authenticated ones, both with RepoNotFound.
        status = 404 if ex.user is not None else 401
        return HubError(status, "Repository not found", code="RepoNotFound")

    def _get_readable_repo(self, ex: _Exchange, repo_type: str, repo_id: str) -> Repo:
        if ex.bad_token:
            raise HubError(401, "Invalid credentials in Authorization header")
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._can_write(ex.user, repo.namespace)):
            raise self._repo_not_found(ex)
        return repo

    def _get_writable_repo(self, ex: _Exchange, repo_type: str, repo_id: str) -> tuple[Repo, User]:
        repo = self._get_readable_repo(ex, repo_type, repo_id)
        user = self._require_user(ex)
        if not self._can_write(user, repo.namespace):
            raise HubError(403, f"You don't have the rights to write to {repo_type}s/{repo_id}")
        return repo, user

    def _check_gated(self, ex: _Exchange, repo: Repo) -> None:
        if not repo.gated or self._can_write(ex.user, repo.namespace):
            return
        if ex.user is not None and ex.user.name in repo.gated_access:
            return
        status = 403 if ex.user is not None else 401
        raise HubError(
            status,
            f"Access to {repo.repo_type} {repo.repo_id} is restricted. You must have access to it and be authenticated"
            " to access it. Please log in.",
            code="GatedRepo",
        )

    def _resolve(self, repo: Repo, revision: str) -> str | None:
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.tags:
            return repo.tags[revision]
        if revision.startswith("refs/heads/"):
            return repo.branches.get(revision[len("refs/heads/") :])
        if revision.startswith("refs/tags/"):
            return repo.tags.get(revision[len("refs/tags/") :])
        if revision.startswith("refs/pr/"):
            num = revision[len("refs/pr/") :]
            return repo.pull_requests.get(int(num)) if num.isdigit() else None
        rev = revision.lower()
        if 7 <= len(rev) <= 40 and all(c in "0123456789abcdef" for c in rev):
            matches = [oid for oid in repo.commits if oid.startswith(rev)]
            if len(matches) == 1:
                return matches[0]
        return None

    def _resolve_or_raise(self, repo: Repo, revision: str) -> Commit:
        oid = self._resolve(repo, revision)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return repo.commits[oid]

    # ------------------------------------------------------------------ storage primitives

    def _create_repo(self, repo_type: str, repo_id: str, *, private: bool) -> Repo:
        repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now(), uid=uuid.uuid4().hex[:24])
        tree: dict[str, FileEntry] = {}
        if self.initial_gitattributes:
            tree[".gitattributes"] = self._store_regular(repo, DEFAULT_GITATTRIBUTES)
        commit = self._new_commit(repo, None, "initial commit", "", "system", tree)
        repo.branches["main"] = commit.oid
        self.repos[(repo_type, repo_id)] = repo
        return repo

    @staticmethod
    def _store_regular(repo: Repo, data: bytes) -> FileEntry:
        blob_id = git_blob_sha1(data)
        repo.blobs[blob_id] = data
        return FileEntry(size=len(data), blob_id=blob_id)

    @staticmethod
    def _lfs_entry(oid: str, size: int) -> FileEntry:
        pointer = LFS_POINTER_TEMPLATE.format(oid=oid, size=size).encode()
        return FileEntry(size=size, blob_id=git_blob_sha1(pointer), lfs_oid=oid, pointer_size=len(pointer))

    def _store_lfs(self, repo: Repo, data: bytes) -> FileEntry:
        oid = hashlib.sha256(data).hexdigest()
        repo.lfs_objects[oid] = data
        return self._lfs_entry(oid, len(data))

    def _new_commit(
        self, repo: Repo, parent: str | None, title: str, message: str, author: str, files: dict[str, FileEntry]
    ) -> Commit:
        self._commit_counter += 1
        date = _now()
        digest = hashlib.sha1()
        for part in (repo.repo_id, parent or "", title, message, author, _iso(date), str(self._commit_counter)):
            digest.update(part.encode() + b"\0")
        for path in sorted(files):
            digest.update(f"{path}\0{files[path].blob_id}\0".encode())
        commit = Commit(
            oid=digest.hexdigest(), parent=parent, title=title, message=message, author=author, date=date,
            files=dict(files),
        )
        repo.commits[commit.oid] = commit
        return commit

    @staticmethod
    def _gitattributes_lfs_patterns(repo: Repo, tree: dict[str, FileEntry]) -> list[str]:
        entry = tree.get(".gitattributes")
        if entry is None:
            return []
        patterns = []
        for line in repo.content(entry).decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
                patterns.append(parts[0])
        return patterns

    def _upload_mode(self, repo: Repo, tree: dict[str, FileEntry], path: str, sample: bytes, size: int) -> str:
        """'lfs' or 'regular', the way the Hub decides in /preupload: LFS if a `filter=lfs` pattern of the
        branch's `.gitattributes` matches, if the sample contains a NUL byte (binary) or if the file is >= 10 MB.
        Without `.gitattributes` handling (``initial_gitattributes=False``) weight extensions count as LFS too."""
        basename = path.rsplit("/", 1)[-1]
        for pattern in self._gitattributes_lfs_patterns(repo, tree):
            target = path if "/" in pattern.strip("/") else basename
            if fnmatch.fnmatchcase(target, pattern.lstrip("/")):
                return "lfs"
        if not self.initial_gitattributes and basename.endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt")):
            return "lfs"
        if size >= LFS_SIZE_THRESHOLD or b"\0" in sample:
            return "lfs"
        return "regular"

    # ------------------------------------------------------------------ JSON shapes

    @staticmethod
    def _directories(files: dict[str, FileEntry]) -> set[str]:
        dirs = set()
        for path in files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return dirs

    @staticmethod
    def _tree_oid(files: dict[str, FileEntry], directory: str) -> str:
        prefix = directory + "/"
        digest = hashlib.sha1(b"tree\0")
        for path in sorted(p for p in files if p.startswith(prefix)):
            digest.update(f"{path[len(prefix):]}\0{files[path].blob_id}\0".encode())
        return digest.hexdigest()

    def _last_commit(self, repo: Repo, commit: Commit, path: str, is_dir: bool) -> dict:
        def state(c: Commit):
            if not is_dir:
                return c.files.get(path)
            prefix = path + "/"
            return tuple(sorted((p, e.blob_id) for p, e in c.files.items() if p.startswith(prefix)))

        current = commit
        target = state(commit)
        while current.parent is not None and state(repo.commits[current.parent]) == target:
            current = repo.commits[current.parent]
        return {"id": current.oid, "title": current.title, "date": _iso(current.date)}

    def _file_json(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict:
        entry = commit.files[path]
        data: dict = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": path}
        if entry.is_lfs:
            data["lfs"] = {"oid": entry.lfs_oid, "size": entry.size, "pointerSize": entry.pointer_size}
        if expand:
            data["lastCommit"] = self._last_commit(repo, commit, path, is_dir=False)
            data["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False}, "pickleImportScan": None}
        return data

    def _dir_json(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict:
        data: dict = {"type": "directory", "oid": self._tree_oid(commit.files, path), "size": 0, "path": path}
        if expand:
            data["lastCommit"] = self._last_commit(repo, commit, path, is_dir=True)
        return data

    def _paginate(self, ex: _Exchange, items: list, page_size: int) -> _Response:
        try:
            start = int(ex.param("cursor", "0") or 0)
        except ValueError as e:
            raise HubError(400, "Invalid cursor") from e
        page = items[start : start + page_size]
        response = _json_response(page)
        if start + page_size < len(items):
            query = {k: v for k, v in ex.query.items() if k != "cursor"}
            query["cursor"] = [str(start + page_size)]
            next_url = f"{self.url}{ex.path}?{urlencode(query, doseq=True)}"
            response.headers["Link"] = f'<{next_url}>; rel="next"'
        return response

    # ------------------------------------------------------------------ route handlers: account and repos

    def _whoami(self, ex: _Exchange) -> _Response:
        ex.record.kind = "whoami"
        user = self._require_user(ex)
        return _json_response(
            {
                "type": "user",
                "id": hashlib.sha1(user.name.encode()).hexdigest()[:24],
                "name": user.name,
                "fullname": user.name,
                "email": f"{user.name}@example.invalid",
                "emailVerified": True,
                "isPro": False,
                "canPay": False,
                "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "write"} for org in user.orgs],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test token", "role": "write"}},
            }
        )

    def _create_repo_route(self, ex: _Exchange) -> _Response:
        ex.record.kind = "create_repo"
        user = self._require_user(ex)
        payload = ex.json() or {}
        name = payload.get("name")
        if not isinstance(name, str) or not name or "/" in name:
            raise HubError(400, "Invalid repo name")
        namespace = payload.get("organization") or user.name
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIXES:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        repo_id = f"{namespace}/{name}"
        ex.record.repo_type, ex.record.repo_id = repo_type, repo_id
        if not self._can_write(user, namespace):
            raise HubError(403, f"You don't have the rights to create a {repo_type} under the namespace '{namespace}'")
        url = f"{self.url}/{_URL_PREFIXES[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return _json_response({"error": f"You already created this {repo_type} repo", "url": url}, status=409)
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = self._create_repo(repo_type, repo_id, private=private)
        return _json_response({"url": url, "name": repo_id, "id": repo.uid})

    def _delete_repo_route(self, ex: _Exchange) -> _Response:
        ex.record.kind = "delete_repo"
        user = self._require_user(ex)
        payload = ex.json() or {}
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or user.name}/{payload.get('name')}"
        ex.record.repo_type, ex.record.repo_id = repo_type, repo_id
        self._get_writable_repo(ex, repo_type, repo_id)
        del self.repos[(repo_type, repo_id)]
        return _Response(status=200, body=b"", headers={"Content-Type": "text/plain"})

    def _move_repo_route(self, ex: _Exchange) -> _Response:
        ex.record.kind = "move_repo"
        payload = ex.json() or {}
        repo_type = payload.get("type") or "model"
        src, dst = payload.get("fromRepo"), payload.get("toRepo")
        ex.record.repo_type, ex.record.repo_id = repo_type, src
        repo, user = self._get_writable_repo(ex, repo_type, src)
        if not isinstance(dst, str) or dst.count("/") != 1:
            raise HubError(400, "Invalid target repo id")
        if not self._can_write(user, dst.split("/")[0]):
            raise HubError(403, f"You don't have the rights to write to {dst}")
        if (repo_type, dst) in self.repos:
            raise HubError(409, "A repo with this name already exists")
        del self.repos[(repo_type, src)]
        repo.repo_id = dst
        self.repos[(repo_type, dst)] = repo
        return _json_response({"success": True})

    def _settings(self, ex: _Exchange, repo_type: str, repo_id: str) -> _Response:
        ex.record.kind = "repo_settings"
        repo, _ = self._get_writable_repo(ex, repo_type, repo_id)
        payload = ex.json() or {}
        if "visibility" in payload:
            repo.private = payload["visibility"] == "private"
        if "private" in payload:
            repo.private = bool(payload["private"])
        if "gated" in payload:
            repo.gated = payload["gated"]
        return _json_response({"success": True})

    def _repo_info(self, ex: _Exchange, repo_type: str, repo_id: str, revision: str | None) -> _Response:
        ex.record.kind = "repo_info"
        ex.record.revision = revision
        repo = self._get_readable_repo(ex, repo_type, repo_id)
        commit = self._resolve_or_raise(repo, revision or "main")
        with_blobs = _is_true(ex.param("blobs"))
        siblings = []
        for path in sorted(commit.files):
            sibling: dict = {"rfilename": path}
            if with_blobs:
                entry = commit.files[path]
                sibling.update(size=entry.size, blobId=entry.blob_id)
                if entry.is_lfs:
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.lfs_oid, "pointerSize": entry.pointer_size}
            siblings.append(sibling)
        data: dict = {
            "_id": repo.uid,
            "id": repo.repo_id,
            "author": repo.namespace,
            "sha": commit.oid,
            "lastModified": _iso(commit.date),
            "createdAt": _iso(repo.created_at),
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(len(v) for v in repo.blobs.values()) + sum(len(v) for v in repo.lfs_objects.values()),
        }
        if repo_type == "model":
            data["modelId"] = repo.repo_id
            data["spaces"] = []
        if repo_type == "space":
            data["sdk"] = "static"
        expand = ex.query.get("expand", []) + ex.query.get("expand[]", [])
        if expand:
            data = {k: v for k, v in data.items() if k in ("_id", "id") or k in expand}
        return _json_response(data)

    # ------------------------------------------------------------------ route handlers: listings

    def _tree(self, ex: _Exchange, repo_type: str, repo_id: str, revision: str, path: str) -> _Response:
        ex.record.kind = "tree"
        ex.record.revision, ex.record.filename = revision, path or None
        repo = self._get_readable_repo(ex, repo_type, repo_id)
        commit = self._resolve_or_raise(repo, revision)
        recursive = _is_true(ex.param("recursive"))
        expand = _is_true(ex.param("expand"))
        dirs = self._directories(commit.files)
        if path and path not in dirs:
            raise HubError(404, f"Entry not found: {path}", code="EntryNotFound")
        prefix = path + "/" if path else ""

        def wanted(p: str) -> bool:
            return p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])

        entries = [(p, True) for p in dirs if wanted(p)] + [(p, False) for p in commit.files if wanted(p)]
        entries.sort(key=lambda item: (not item[1], item[0]) if not recursive else item[0])
        items = [
            self._dir_json(repo, commit, p, expand) if is_dir else self._file_json(repo, commit, p, expand)
            for p, is_dir in entries
        ]
        return self._paginate(ex, items, min(self.tree_page_size, 50) if expand else self.tree_page_size)

    def _paths_info(self, ex: _Exchange, repo_type: str, repo_id: str, revision: str) -> _Response:
        ex.record.kind = "paths_info"
        ex.record.revision = revision
        repo = self._get_readable_repo(ex, repo_type, repo_id)
        commit = self._resolve_or_raise(repo, revision)
        if "json" in ex.headers.get("content-type", ""):
            payload = ex.json() or {}
            paths, expand = payload.get("paths") or [], bool(payload.get("expand"))
        else:
            form = parse_qs(ex.body.decode(), keep_blank_values=True)
            paths = form.get("paths", []) + form.get("paths[]", [])
            expand = _is_true((form.get("expand") or ["false"])[0])
        if isinstance(paths, str):
            paths = [paths]
        dirs = self._directories(commit.files)
        result = []
        for raw in paths:
            path = raw.strip("/")
            if path in commit.files:
                result.append(self._file_json(repo, commit, path, expand))
            elif path in dirs:
                result.append(self._dir_json(repo, commit, path, expand))
        return _json_response(result)

    def _refs(self, ex: _Exchange, repo_type: str, repo_id: str) -> _Response:
        ex.record.kind = "refs"
        repo = self._get_readable_repo(ex, repo_type, repo_id)
        data: dict = {
            "branches": [
                {"name": n, "ref": f"refs/heads/{n}", "targetCommit": oid} for n, oid in sorted(repo.branches.items())
            ],
            "converts": [],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": oid} for n, oid in sorted(repo.tags.items())],
        }
        if _is_true(ex.param("include_prs")):
            data["pullRequests"] = [
                {"name": f"refs/pr/{num}", "ref": f"refs/pr/{num}", "targetCommit": oid}
                for num, oid in sorted(repo.pull_requests.items())
            ]
        return _json_response(data)

    def _commits(self, ex: _Exchange, repo_type: str, repo_id: str, revision: str) -> _Response:
        ex.record.kind = "commits"
        ex.record.revision = revision
        repo = self._get_readable_repo(ex, repo_type, repo_id)
        commit: Commit | None = self._resolve_or_raise(repo, revision)
        items = []
        while commit is not None:
            items.append(
                {
                    "id": commit.oid,
                    "title": commit.title,
                    "message": commit.message,
                    "authors": [{"user": commit.author}],
                    "date": _iso(commit.date),
                }
            )
            commit = repo.commits[commit.parent] if commit.parent else None
        return self._paginate(ex, items, self.commits_page_size)

    # ------------------------------------------------------------------ route handlers: refs

    def _create_tag(self, ex: _Exchange, repo_type: str, repo_id: str, revision: str) -> _Response:
        ex.record.kind = "tag"
        ex.record.revision = revision
        repo, _ = self._get_writable_repo(ex, repo_type, repo_id)
        payload = ex.json() or {}
        tag = payload.get("tag")
        if not isinstance(tag, str) or not tag:
            raise HubError(400, "Missing tag name")
        commit = self._resolve_or_raise(repo, revision)
        if tag in repo.tags:
            raise HubError(409, f"Tag {tag} already exists")
        repo.tags[tag] = commit.oid
        if payload.get("message"):
            repo.tag_messages[tag] = payload["message"]
        return _json_response({"name": tag, "ref": f"refs/tags/{tag}", "targetCommit": commit.oid})

    def _delete_tag(self, ex: _Exchange, repo_type: str, repo_id: str, tag: str) -> _Response:
        ex.record.kind = "tag"
        ex.record.revision = tag
        repo, _ = self._get_writable_repo(ex, repo_type, repo_id)
        if tag not in repo.tags:
            raise HubError(404, f"Invalid rev id: {tag}", code="RevisionNotFound")
        del repo.tags[tag]
        repo.tag_messages.pop(tag, None)
        return _json_response({"success": True})

    def _create_branch(self, ex: _Exchange, repo_type: str, repo_id: str, branch: str) -> _Response:
        ex.record.kind = "branch"
        ex.record.revision = branch
        repo, _ = self._get_writable_repo(ex, repo_type, repo_id)
        payload = ex.json() or {}
        start = self._resolve_or_raise(repo, payload.get("startingPoint") or "main")
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        repo.branches[branch] = start.oid
        return _json_response({"name": branch, "ref": f"refs/heads/{branch}", "targetCommit": start.oid})

    def _delete_branch(self, ex: _Exchange, repo_type: str, repo_id: str, branch: str) -> _Response:
        ex.record.kind = "branch"
        ex.record.revision = branch
        repo, _ = self._get_writable_repo(ex, repo_type, repo_id)
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", code="RevisionNotFound")
        if branch == "main":
            raise HubError(403, "Cannot delete the default branch")
        del repo.branches[branch]
        return _json_response({"success": True})

    # ------------------------------------------------------------------ route handlers: upload

    def _writable_branch(self, repo: Repo, revision: str) -> str | None:
        """Branch name (or 'refs/pr/N') a commit on ``revision`` goes to; None if not a branch."""
        if revision in repo.branches:
            return revision
        if revision.startswith("refs/heads/") and revision[len("refs/heads/") :] in repo.branches:
            return revision[len("refs/heads/") :]
        if revision.startswith("refs/pr/") and revision[len("refs/pr/") :].isdigit():
            if int(revision[len("refs/pr/") :]) in repo.pull_requests:
                return revision
        return None

    def _branch_head(self, repo: Repo, branch: str) -> str:
        if branch.startswith("refs/pr/"):
            return repo.pull_requests[int(branch[len("refs/pr/") :])]
        return repo.branches[branch]

    def _set_branch_head(self, repo: Repo, branch: str, oid: str) -> None:
        if branch.startswith("refs/pr/"):
            repo.pull_requests[int(branch[len("refs/pr/") :])] = oid
        else:
            repo.branches[branch] = oid

    def _branch_or_raise(self, repo: Repo, revision: str) -> str:
        branch = self._writable_branch(repo, revision)
        if branch is None:
            if self._resolve(repo, revision) is not None:
                raise HubError(400, f"Invalid rev id: {revision} is not a branch")
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return branch

    def _preupload(self, ex: _Exchange, repo_type: str, repo_id: str, revision: str) -> _Response:
        ex.record.kind = "preupload"
        ex.record.revision = revision
        repo, _ = self._get_writable_repo(ex, repo_type, repo_id)
        if _is_true(ex.param("create_pr")):
            head = self._resolve_or_raise(repo, revision)
        else:
            head = repo.commits[self._branch_head(repo, self._branch_or_raise(repo, revision))]
        payload = ex.json() or {}
        files = payload.get("files")
        if not isinstance(files, list):
            raise HubError(400, "Missing files")
        result = []
        for item in files:
            path = item.get("path")
            if not isinstance(path, str):
                raise HubError(400, "Invalid file path")
            try:
                sample = base64.b64decode(item.get("sample") or "")
            except ValueError as e:
                raise HubError(400, f"Invalid sample for {path}") from e
            mode = self._upload_mode(repo, head.files, path, sample, int(item.get("size") or 0))
            existing = head.files.get(path)
            oid = None
            if existing is not None:
                oid = existing.lfs_oid if existing.is_lfs else existing.blob_id
            result.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return _json_response({"files": result, "commitOid": head.oid})

    def _lfs_batch(self, ex: _Exchange, repo_type: str, repo_id: str) -> _Response:
        ex.record.kind = "lfs_batch"
        ex.record.repo_type, ex.record.repo_id = repo_type, repo_id
        lfs_type = "application/vnd.git-lfs+json"
        repo, _ = self._get_writable_repo(ex, repo_type, repo_id)
        payload = ex.json() or {}
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the 'upload' operation is supported by this test server")
        ref = (payload.get("ref") or {}).get("name")
        ex.record.revision = ref
        if ref is not None and self._resolve(repo, ref) is None:
            raise HubError(404, f"Invalid rev id: {ref}", code="RevisionNotFound")
        chunk_size = self.lfs_multipart_chunk_size
        objects = []
        for obj in payload.get("objects") or []:
            oid, size = obj.get("oid"), obj.get("size")
            if not (isinstance(oid, str) and len(oid) == 64 and all(c in "0123456789abcdef" for c in oid)) or not (
                isinstance(size, int) and size >= 0
            ):
                objects.append(
                    {"oid": str(oid), "size": size if isinstance(size, int) else 0,
                     "error": {"code": 422, "message": "Invalid oid or size"}}
                )
                continue
            stored = repo.lfs_objects.get(oid)
            if stored is not None and len(stored) == size:
                objects.append({"oid": oid, "size": size})  # already there: no actions => client skips upload
                continue
            ticket = secrets.token_urlsafe(16)
            self._tickets[ticket] = {"repo": (repo_type, repo_id), "oid": oid, "size": size, "parts": {}}
            upload: dict = {"href": f"{self.url}/__lfs__/upload/{ticket}"}
            if chunk_size is not None and size > chunk_size:
                nb_parts = -(-size // chunk_size)
                upload["header"] = {"chunk_size": str(chunk_size)}
                upload["header"].update(
                    {str(i): f"{self.url}/__lfs__/upload/{ticket}/part/{i}" for i in range(1, nb_parts + 1)}
                )
            objects.append(
                {
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {
                        "upload": upload,
                        "verify": {"href": f"{self.url}/__lfs__/verify/{ticket}", "header": {}},
                    },
                }
            )
        return _json_response({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, content_type=lfs_type)

    def _lfs_storage_route(self, ex: _Exchange, rest: list[str]) -> _Response:
        if len(rest) < 2 or rest[0] not in ("upload", "verify"):
            raise HubError(404, "Not Found")
        ticket = self._tickets.get(rest[1])
        if ticket is None:
            raise HubError(403, "Invalid or expired upload URL")
        repo_type, repo_id = ticket["repo"]
        ex.record.repo_type, ex.record.repo_id = repo_type, repo_id
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", code="RepoNotFound")
        oid, size = ticket["oid"], ticket["size"]

        if rest[0] == "verify" and len(rest) == 2 and ex.method == "POST":
            ex.record.kind = "lfs_verify"
            payload = ex.json() or {}
            stored = repo.lfs_objects.get(oid)
            if payload.get("oid") != oid or stored is None or len(stored) != payload.get("size"):
                raise HubError(404, f"LFS object {oid} not found or has the wrong size")
            return _json_response({"success": True})

        if rest[0] == "upload" and len(rest) == 4 and rest[2] == "part" and ex.method == "PUT":
            ex.record.kind = "lfs_upload_part"
            ticket["parts"][int(rest[3])] = ex.body
            return _Response(status=200, headers={"ETag": f'"{hashlib.md5(ex.body).hexdigest()}"'})

        if rest[0] == "upload" and len(rest) == 2 and ex.method in ("PUT", "POST"):
            if ex.method == "PUT":
                ex.record.kind = "lfs_upload"
                data = ex.body
            else:  # multipart completion
                ex.record.kind = "lfs_complete"
                payload = ex.json() or {}
                if payload.get("oid") != oid:
                    raise HubError(400, "Completion oid does not match the upload")
                parts = []
                for part in payload.get("parts") or []:
                    body = ticket["parts"].get(part.get("partNumber"))
                    if body is None or part.get("etag", "").strip('"') != hashlib.md5(body).hexdigest():
                        raise HubError(400, f"Invalid part {part.get('partNumber')}")
                    parts.append(body)
                data = b"".join(parts)
            if len(data) != size:
                raise HubError(400, f"Size mismatch: expected {size} bytes, got {len(data)}")
            if hashlib.sha256(data).hexdigest() != oid:
                raise HubError(400, "sha256 of the uploaded content does not match the oid")
            repo.lfs_objects[oid] = data
            self.uploads.append(UploadRecord(repo_type, repo_id, "lfs", oid, None, data))
            return _Response(status=200)
        raise HubError(404, "Not Found")

    def _commit(self, ex: _Exchange, repo_type: str, repo_id: str, revision: str) -> _Response:
        ex.record.kind = "commit"
        ex.record.revision = revision
        repo, user = self._get_writable_repo(ex, repo_type, repo_id)
        try:
            lines = [json.loads(line) for line in ex.body.decode().splitlines() if line.strip()]
        except ValueError as e:
            raise HubError(400, f"Invalid NDJSON payload: {e}") from e
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line of the commit payload must be the header")
        header = lines[0].get("value") or {}
        summary = header.get("summary")
        if not isinstance(summary, str) or not summary:
            raise HubError(400, "Missing commit summary")

        create_pr = _is_true(ex.param("create_pr"))
        pr_num = None
        if create_pr:
            base = self._resolve_or_raise(repo, revision)
            branch, head_oid = None, base.oid
        else:
            branch = self._branch_or_raise(repo, revision)
            head_oid = self._branch_head(repo, branch)

        parent_commit = header.get("parentCommit")
        if parent_commit and not head_oid.startswith(str(parent_commit).lower()):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")

        tree = dict(repo.commits[head_oid].files)
        regular_uploads: list[UploadRecord] = []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = value.get("path")
            if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
                raise HubError(400, f"Invalid path in commit operation: {path!r}")
            if key == "file":
                content = value.get("content", "")
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                tree[path] = self._store_regular(repo, data)
                regular_uploads.append(UploadRecord(repo_type, repo_id, "regular", tree[path].blob_id, path, data))
            elif key == "lfsFile":
                oid = value.get("oid")
                stored = repo.lfs_objects.get(oid) if isinstance(oid, str) else None
                if stored is None:
                    raise HubError(
                        400,
                        f"Your push was rejected because an LFS pointer pointed to a file that does not exist: "
                        f"{path} ({oid})",
                    )
                if value.get("size") is not None and value["size"] != len(stored):
                    raise HubError(400, f"Size mismatch for LFS file {path}")
                tree[path] = self._lfs_entry(oid, len(stored))
            elif key == "deletedFile":
                if path not in tree:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
                del tree[path]
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                doomed = [p for p in tree if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", code="EntryNotFound")
                for p in doomed:
                    del tree[p]
            else:
                raise HubError(400, f"Unknown commit operation: {key!r}")

        commit = self._new_commit(repo, head_oid, summary, header.get("description") or "", user.name, tree)
        if create_pr:
            pr_num = max(repo.pull_requests, default=0) + 1
            repo.pull_requests[pr_num] = commit.oid
        else:
            self._set_branch_head(repo, branch, commit.oid)
        self.uploads.extend(regular_uploads)
        data = {
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{self.url}/{_URL_PREFIXES[repo_type]}{repo_id}/commit/{commit.oid}",
            "hookOutput": "",
        }
        if pr_num is not None:
            data["pullRequestUrl"] = f"{self.url}/{_URL_PREFIXES[repo_type]}{repo_id}/discussions/{pr_num}"
        return _json_response(data)

    # ------------------------------------------------------------------ route handlers: download

    def _resolve_route(self, ex: _Exchange, repo_type: str, repo_id: str, revision: str, path: str) -> _Response:
        ex.record.kind = "resolve"
        ex.record.repo_type, ex.record.repo_id = repo_type, repo_id
        ex.record.revision, ex.record.filename = revision, path
        repo = self._get_readable_repo(ex, repo_type, repo_id)
        self._check_gated(ex, repo)
        commit = self._resolve_or_raise(repo, revision)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        data = repo.content(entry)
        total = len(data)
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{entry.etag}"',
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        if entry.is_lfs:
            headers["X-Linked-Etag"] = f'"{entry.etag}"'
            headers["X-Linked-Size"] = str(total)

        status, body = 200, data
        range_header = ex.headers.get("range")
        if range_header:
            parsed = self._parse_range(range_header, total)
            if parsed == "unsatisfiable":
                headers["Content-Range"] = f"bytes */{total}"
                return _Response(status=416, body=b"", headers=headers)
            if parsed is not None:
                start, end = parsed
                status, body = 206, data[start : end + 1]
                headers["Content-Range"] = f"bytes {start}-{end}/{total}"

        response = _Response(status=status, body=body, headers=headers)
        if ex.method == "GET":
            for fault in self._faults:
                if fault["remaining"] > 0 and fault["repo_id"] == repo_id and fault["filename"] == path:
                    fault["remaining"] -= 1
                    response.truncate_after = min(fault["after"], len(body))
                    break
        return response

    @staticmethod
    def _parse_range(value: str, total: int):
        """(start, end) inclusive, None to ignore the header (send 200), or 'unsatisfiable' (416)."""
        value = value.strip()
        if not value.lower().startswith("bytes=") or "," in value:
            return None  # unsupported unit or multiple ranges: serve the full content
        spec = value[len("bytes=") :].strip()
        first, sep, last = spec.partition("-")
        first, last = first.strip(), last.strip()
        if not sep or (first and not first.isdigit()) or (last and not last.isdigit()) or (not first and not last):
            return None
        if not first:  # suffix range: last N bytes
            length = int(last)
            if length == 0:
                return "unsatisfiable"
            return max(total - length, 0), total - 1
        start = int(first)
        end = min(int(last), total - 1) if last else total - 1
        if start >= total or (last and int(last) < start):
            return "unsatisfiable"
        return start, end
