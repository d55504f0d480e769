"""HubRegistry: a Hugging Face Hub model repo used as a registry (``hf://ORG/REPO[@REVISION]``).

The repo holds the same expert folders as a local registry, under ``experts/<id>/``, plus ``index.json``
(every card and the registry tags), so listing and finding need one small download. Pushing uploads only the
experts the repo lacks, in one commit whose message names them; pulling downloads only the requested expert
folders (``allow_patterns``) and checks every file's sha256. A revision (branch, tag or commit) pins what is
read; writes go to a branch. Tokens come from huggingface_hub's usual sources and are never printed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .base import Query, Registry, resolve_among
from .card import CARD_FILE, ExpertCard
from .errors import HubError, ZooError, first_line
from .expert import Expert
from .names import validate_tag

INDEX_FILE = "index.json"
INDEX_FORMAT = "zoo.registry"


@contextlib.contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """Turn huggingface_hub's and its HTTP client's exceptions into one-line :class:`HubError` messages that
    name ``what`` and, for HTTP errors, the status and the endpoint."""
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    timeouts, transport = _transport_errors()

    try:
        yield
    except RevisionNotFoundError:
        raise HubError(f"{what}: revision not found") from None
    except RepositoryNotFoundError:
        raise HubError(f"{what}: repository not found (or it is private and no valid token was given: "
                       f"`hf auth login` or HF_TOKEN)") from None
    except EntryNotFoundError as e:
        raise HubError(f"{what}: file not found on the Hub ({first_line(e)})") from None
    except HfHubHTTPError as e:
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
        url = _endpoint_of(getattr(response, "request", None))
        hint = _STATUS_HINTS.get(status, "the Hub refused the request")
        raise HubError(f"{what}: HTTP {status} from {url}: {hint}") from None
    except timeouts as e:
        raise HubError(f"{what}: the Hub at {_endpoint_of(e)} did not answer in time ({type(e).__name__})") from None
    except transport as e:  # connection refused or reset, DNS, a body cut short
        raise HubError(f"{what}: cannot reach the Hub at {_endpoint_of(e)} ({type(e).__name__}: "
                       f"{first_line(e)})") from None
    except (ConnectionError, OSError) as e:
        if isinstance(e, ZooError):
            raise
        raise HubError(f"{what}: cannot reach the Hub ({first_line(e)})") from None


@functools.lru_cache(maxsize=1)
def _transport_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(timeout, transport) exception classes of whichever HTTP clients huggingface_hub may use (httpx2 in
    recent releases, httpx before, requests in old ones)."""
    timeouts: list[type] = []
    transport: list[type] = []
    for name in ("httpx2", "httpx"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        timeouts.append(mod.TimeoutException)
        transport.append(mod.TransportError)
    try:
        import requests

        timeouts.append(requests.exceptions.Timeout)
        transport.append(requests.exceptions.ConnectionError)
    except ImportError:
        pass
    return tuple(timeouts), tuple(transport)


_STATUS_HINTS = {
    400: "bad request",
    401: "not authenticated (log in with `hf auth login` or set HF_TOKEN)",
    403: "forbidden (the token lacks write access to this repo)",
    404: "not found",
    409: "conflict (it already exists)",
    412: "the repo changed meanwhile (precondition failed); run the command again",
    413: "payload too large",
    429: "rate limited; try again later",
}


def _endpoint_of(obj: Any) -> str:
    """scheme://host[:port]/path of the request an error concerns (never a query string or a token)."""
    request = obj
    if isinstance(obj, BaseException):
        try:
            request = obj.request  # httpx raises RuntimeError when the error carries no request
        except (AttributeError, RuntimeError):
            return "the configured endpoint"
    from urllib.parse import urlsplit

    url = getattr(request, "url", None)
    if url is None:
        return "the configured endpoint"
    parts = urlsplit(str(url))
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


class HubRegistry(Registry):
    """A registry in a Hub repo. ``revision`` pins reads (branch, tag or commit sha); writes need a branch."""

    def __init__(self, repo_id: str, revision: str | None = None, *, token: str | None = None,
                 endpoint: str | None = None, private: bool = False):
        from huggingface_hub import HfApi

        self.repo_id = repo_id
        self.revision = revision
        self.private = private
        self.uri = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
        self._token = token
        self._endpoint = endpoint
        self._api = HfApi(endpoint=endpoint, token=token)
        self._cache: tuple[str, dict[str, ExpertCard], dict[str, str]] | None = None
        self.flat = False

    def __repr__(self) -> str:
        return f"HubRegistry({self.uri!r})"

    # --- the index ---------------------------------------------------------------------------------------------

    def head(self) -> str:
        """The commit sha the registry's revision points at now."""
        with hub_errors(self.uri):
            info = self._api.model_info(self.repo_id, revision=self.revision)
        if not info.sha:
            raise HubError(f"{self.uri}: the Hub did not report a commit for this revision")
        return info.sha

    def _fetch(self, filename: str, sha: str) -> bytes | None:
        """A small file of the repo at commit ``sha``, or None when the repo has no such file."""
        from huggingface_hub import hf_hub_download

        try:
            with hub_errors(self.uri):
                path = hf_hub_download(self.repo_id, filename, revision=sha, token=self._token,
                                       endpoint=self._endpoint)
        except HubError as e:
            if "file not found" in str(e):
                return None
            raise
        return Path(path).read_bytes()

    def _index(self, refresh: bool = False) -> tuple[str, dict[str, ExpertCard], dict[str, str]]:
        """(commit sha, cards by id, tags) at the registry's revision, read once per commit.

        A repo without ``index.json`` is an empty registry, unless it holds one expert at its root (as
        ``zoo export`` writes it, for timm's ``hf-hub:`` loader): then it is that expert's read-only registry.
        """
        if self._cache is not None and not refresh:
            return self._cache
        sha = self.head()
        index = self._fetch(INDEX_FILE, sha)
        self.flat = False
        if index is not None:
            self._cache = (sha, *parse_index(index, f"{self.uri}/{INDEX_FILE}"))
            return self._cache
        card = self._fetch(CARD_FILE, sha)
        if card is None:
            self._cache = (sha, {}, {})
            return self._cache
        parsed = ExpertCard.from_json(card, f"{self.uri}/{CARD_FILE}")
        self.flat = True
        self._cache = (sha, {parsed.id: parsed}, {})
        return self._cache

    def _prefix(self, card: ExpertCard) -> str:
        return "" if self.flat else f"experts/{card.id}/"

    def _write_branch(self) -> str:
        branch = self.revision or "main"
        with hub_errors(self.uri):
            refs = self._api.list_repo_refs(self.repo_id)
        if branch not in {b.name for b in refs.branches}:
            raise HubError(f"{self.uri}: cannot write to revision {branch!r}: it is not a branch")
        return branch

    def _commit(self, operations: list[Any], cards: dict[str, ExpertCard], tags: dict[str, str],
                message: str, parent: str) -> str:
        from huggingface_hub import CommitOperationAdd

        if self.flat:
            raise HubError(f"{self.uri} holds a single exported expert at its root; push to a registry repo instead")
        index = render_index(cards, tags)
        operations = [*operations, CommitOperationAdd(path_in_repo=INDEX_FILE, path_or_fileobj=index)]
        with hub_errors(self.uri):
            info = self._api.create_commit(self.repo_id, operations, commit_message=message,
                                           revision=self._write_branch(), parent_commit=parent)
        self._cache = None
        return info.oid

    # --- writing -----------------------------------------------------------------------------------------------

    def push(self, experts: Sequence[Expert], message: str | None = None, git_tag: str | None = None,
             tags: dict[str, str] | None = None) -> list[ExpertCard]:
        """Upload the experts the repo lacks (and set ``tags``) in one commit; return the cards added.

        The repo is created (private if the registry was opened with ``private=True``) when missing. With
        ``git_tag``, the resulting commit is also tagged so that ``hf://ORG/REPO@TAG`` pins it.
        """
        from huggingface_hub import CommitOperationAdd

        # Everything is checked before the first request that changes the Hub: every expert's bytes against
        # its card and its id against its content, every tag name.
        for expert in experts:
            expert.verify(deep=True)
        for t in tags or {}:
            validate_tag(t)
        if git_tag is not None:
            validate_tag(git_tag)
        with hub_errors(self.uri):
            self._api.create_repo(self.repo_id, private=self.private or None, exist_ok=True)
        sha, cards, remote_tags = self._index(refresh=True)
        if git_tag is not None:
            with hub_errors(self.uri):
                existing = {t.name for t in self._api.list_repo_refs(self.repo_id).tags}
            if git_tag in existing:
                raise HubError(f"{self.uri}: git tag {git_tag!r} already exists (choose another)")
        new = [e for e in experts if e.id not in cards]
        changed_tags = {t: i for t, i in (tags or {}).items() if remote_tags.get(t) != i}
        if new or changed_tags:
            ops = [CommitOperationAdd(path_in_repo=f"experts/{e.id}/{fname}", path_or_fileobj=str(e.path / fname))
                   for e in new for fname in [*e.card.files, "zoo.json"]]
            merged = {**cards, **{e.id: e.card for e in new}}
            missing = [t for t, i in changed_tags.items() if i not in merged]
            if missing:
                raise ZooError(f"cannot tag {missing[0]!r}: its expert is not pushed")
            sha = self._commit(ops, merged, {**remote_tags, **changed_tags},
                               message or _push_message(new, changed_tags), sha)
        if git_tag:
            with hub_errors(self.uri):
                self._api.create_tag(self.repo_id, tag=git_tag, revision=sha,
                                     tag_message=f"zoo registry with {len(cards) + len(new)} experts")
        return [e.card for e in new]

    def export(self, expert: Expert, message: str | None = None, git_tag: str | None = None) -> str:
        """Make the repo a standalone model repo holding ``expert`` at its root (``config.json``,
        ``model.safetensors``, ``zoo.json``, ``README.md``...), so that ``timm.create_model("hf-hub:ORG/REPO",
        pretrained=True)`` loads it; zoo reads it back as a one-expert registry. Returns the commit sha."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        with hub_errors(self.uri):
            self._api.create_repo(self.repo_id, private=self.private or None, exist_ok=True)
        sha, cards, _ = self._index(refresh=True)
        if cards and not self.flat:
            raise HubError(f"{self.uri} is a zoo registry (it has index.json); export to a repo of its own")
        expert.verify(deep=False)
        names = [*expert.card.files, CARD_FILE]
        old = [n for c in cards.values() for n in [*c.files, CARD_FILE] if n not in names]
        ops = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(expert.path / n)) for n in names]
        ops += [CommitOperationDelete(path_in_repo=n) for n in old]
        with hub_errors(self.uri):
            info = self._api.create_commit(self.repo_id, ops, parent_commit=sha, revision=self._write_branch(),
                                           commit_message=message or f"Export expert {expert.name} ({expert.id})")
            if git_tag:
                self._api.create_tag(self.repo_id, tag=git_tag, revision=info.oid)
        self._cache = None
        return info.oid

    def add(self, expert: Expert | str | Path, progress: Callable[[int], Any] | None = None) -> ExpertCard:
        """Upload one expert (a no-op if the repo has it); huggingface_hub shows its own progress bars."""
        e = expert if isinstance(expert, Expert) else Expert.load(expert)
        self.push([e])
        return e.card

    def remove(self, ref: str) -> ExpertCard:
        """Delete an expert's folder and index entry (and tags pointing at it) in one commit."""
        from huggingface_hub import CommitOperationDelete

        sha, cards, tags = self._index(refresh=True)
        card = resolve_among(ref, list(cards.values()), tags, self.uri)
        rest = {i: c for i, c in cards.items() if i != card.id}
        kept = {t: i for t, i in tags.items() if i != card.id}
        self._commit([CommitOperationDelete(path_in_repo=f"experts/{card.id}/", is_folder=True)], rest, kept,
                     f"Remove expert {card.name} ({card.id})", sha)
        return card

    def tag(self, tag: str, ref: str) -> ExpertCard:
        """Point a registry tag at an expert (recorded in ``index.json``, one commit)."""
        validate_tag(tag)
        sha, cards, tags = self._index(refresh=True)
        card = resolve_among(ref, list(cards.values()), tags, self.uri)
        if tags.get(tag) != card.id:
            self._commit([], cards, {**tags, tag: card.id}, f"Tag {tag} -> {card.name} ({card.id})", sha)
        return card

    def untag(self, tag: str) -> None:
        """Remove a registry tag (one commit)."""
        sha, cards, tags = self._index(refresh=True)
        if tag not in tags:
            raise ZooError(f"no tag {tag!r} in {self.uri}")
        self._commit([], cards, {t: i for t, i in tags.items() if t != tag}, f"Untag {tag}", sha)

    # --- reading -----------------------------------------------------------------------------------------------

    def tags(self) -> dict[str, str]:
        """Registry tags at the pinned revision."""
        return dict(self._index()[2])

    def card(self, ref: str) -> ExpertCard:
        """The card of the expert ``ref`` names, from ``index.json``."""
        _, cards, tags = self._index()
        return resolve_among(ref, list(cards.values()), tags, self.uri)

    def find(self, query: Query | None = None) -> list[ExpertCard]:
        """Cards matching ``query``, oldest first."""
        _, cards, tags = self._index()
        q = query or Query()
        return sorted((c for c in cards.values() if q.matches(c, tags)), key=lambda c: (c.created_at, c.id))

    def download(self, cards: Sequence[ExpertCard], local_dir: str | Path | None = None) -> list[Expert]:
        """Download exactly these experts' folders (into the HF cache, or ``local_dir``) and verify them."""
        from huggingface_hub import snapshot_download

        if not cards:
            return []
        sha = self._index()[0]
        patterns = [f"{self._prefix(c)}{name}" for c in cards for name in [*c.files, CARD_FILE]]
        with hub_errors(self.uri):
            root = snapshot_download(self.repo_id, revision=sha, token=self._token, endpoint=self._endpoint,
                                     local_dir=str(local_dir) if local_dir else None, allow_patterns=patterns)
        # In the HF cache a snapshot's files link to the repo's blobs: links are allowed there, nowhere else.
        links = None if local_dir else Path(root).parents[1]
        experts = []
        for c in cards:
            expert = Expert.load(Path(root) / self._prefix(c), links_within=links)
            if expert.card.digest != c.digest or expert.card.files != c.files:
                raise HubError(f"{self.uri}: expert {c.id}'s zoo.json does not match index.json")
            expert.verify(deep=False)
            experts.append(expert)
        return experts

    def get(self, ref: str) -> Expert:
        """Download (or reuse from the HF cache) the expert ``ref`` names and return it, verified."""
        return self.download([self.card(ref)])[0]

    @contextlib.contextmanager
    def fetch(self, cards: Sequence[ExpertCard]) -> Iterator[list[Expert]]:
        """The experts of ``cards`` downloaded (one request batch) into a temporary folder for the block."""
        # A system temporary folder, not a local registry's tmp/: another process opening that registry would
        # take an unlocked folder there for debris.
        _sweep_stale_downloads()
        with tempfile.TemporaryDirectory(prefix=f"zoo-hub-{os.getpid()}-") as tmp:
            yield self.download(cards, local_dir=tmp)

    def verify(self, refs: Iterable[str] | None = None) -> list[str]:
        """Download the chosen experts (all by default) and check every file and id; list problems."""
        problems = []
        for card in self.select(list(refs or [])):
            try:
                with self.fetch([card]) as (expert,):
                    expert.verify(deep=True)
            except ZooError as e:
                problems.append(str(e))
        return problems


_DOWNLOAD_DIR = re.compile(r"zoo-hub-(\d+)-[A-Za-z0-9_]+")


def _sweep_stale_downloads() -> int:
    """Remove the temporary download folders of killed zoo processes: ``zoo-hub-<pid>-*`` folders in the
    system temporary folder whose process is gone (and that this user owns). Returns how many."""
    import shutil

    removed = 0
    root = Path(tempfile.gettempdir())
    for entry in root.iterdir():
        m = _DOWNLOAD_DIR.fullmatch(entry.name)
        if not m or entry.is_symlink() or not entry.is_dir():
            continue
        with contextlib.suppress(OSError):
            if entry.stat().st_uid != os.getuid() or _alive(int(m.group(1))):
                continue
            shutil.rmtree(entry)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# --- index.json ----------------------------------------------------------------------------------------------

def parse_index(data: bytes, source: str) -> tuple[dict[str, ExpertCard], dict[str, str]]:
    """Parse ``index.json``: every card is validated like a ``zoo.json``."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HubError(f"{source}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != INDEX_FORMAT:
        raise HubError(f"{source}: not a zoo registry index")
    experts, tags = raw.get("experts", {}), raw.get("tags", {})
    if not isinstance(experts, dict) or not isinstance(tags, dict):
        raise HubError(f"{source}: 'experts' and 'tags' must be objects")
    cards = {i: ExpertCard.from_dict(c, f"{source}: experts.{i}") for i, c in experts.items()}
    for i, card in cards.items():
        if card.id != i:
            raise HubError(f"{source}: entry {i!r} holds the card of expert {card.id}")
    tags = {str(t): str(i) for t, i in tags.items()}
    for t, i in tags.items():
        if i not in cards:
            raise HubError(f"{source}: tag {t!r} points at {i}, which the index does not hold")
    return cards, tags


def render_index(cards: dict[str, ExpertCard], tags: dict[str, str]) -> bytes:
    """``index.json`` bytes for these cards and tags (sorted, so equal registries give equal bytes)."""
    body = {"format": INDEX_FORMAT, "format_version": 1,
            "experts": {i: cards[i].to_dict() for i in sorted(cards)}, "tags": dict(sorted(tags.items()))}
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def _push_message(new: Sequence[Expert], tags: dict[str, str]) -> str:
    parts = []
    if new:
        names = ", ".join(f"{e.name} ({e.id})" for e in new[:10]) + (f" and {len(new) - 10} more" if len(new) > 10 else "")
        parts.append(f"Add {len(new)} expert{'s' if len(new) != 1 else ''}: {names}")
    if tags:
        parts.append("Tag " + ", ".join(f"{t} -> {i}" for t, i in tags.items()))
    return "; ".join(parts)
