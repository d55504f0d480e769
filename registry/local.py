"""LocalRegistry: a folder of expert folders plus an SQLite index (the embedded default).

Layout of a registry folder::

    zoo-registry.json    the marker: zoo made this folder (format and version)
    experts/<id>/...     one complete expert folder per id (the source of truth)
    index.sqlite         the query index (cards, tasks, parents, metrics, labels) and the tags
    tmp/                 experts being written (each with a lock held by its writer)
    trash/               experts being removed

A folder is a registry only if it carries the marker (and its index zoo's application id): zoo never adopts
a folder it did not make, and never creates one inside a non-empty folder.

Writes are atomic: files are written (fsync'd) into ``tmp/``; then, inside one index transaction, the card is
indexed and the folder renamed into ``experts/`` (the commit point). A card that the index refuses never
reaches ``experts/``; a process killed between the rename and the commit leaves a folder that the next open
indexes. Opening also drops rows whose folder is gone, and reports (never indexes) folders it cannot read:
``verify`` names them, ``rm`` and ``gc`` remove them. Debris in ``tmp/`` and ``trash/`` is deleted only by
writing commands and only when it carries zoo's own naming (``<uuid>``, ``<uuid>.lock``, ``.<uuid>``) and its
writer is gone. SQLite's WAL mode and busy timeout let several processes write at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import operator
import os
import re
import shutil
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .base import Query, Registry
from .card import CARD_FILE, ExpertCard, gc_paused
from .errors import (AmbiguousReferenceError, CardError, CorruptExpertError, ExpertNotFoundError,
                     RegistryNotFoundError, ZooError)
from .expert import Expert, check_content, sha256_file, write_expert
from .names import is_expert_id, validate_tag
from .tensorfile import read_header

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experts (
    id TEXT PRIMARY KEY, digest TEXT NOT NULL, name TEXT NOT NULL, architecture TEXT NOT NULL,
    method TEXT NOT NULL, created_at TEXT NOT NULL, card TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS experts_name ON experts(name);
CREATE INDEX IF NOT EXISTS experts_architecture ON experts(architecture);
CREATE TABLE IF NOT EXISTS expert_tasks (
    id TEXT NOT NULL REFERENCES experts(id) ON DELETE CASCADE, position INTEGER NOT NULL, task INTEGER NOT NULL,
    PRIMARY KEY (id, position));
CREATE INDEX IF NOT EXISTS expert_tasks_task_id ON expert_tasks(task, id);
CREATE TABLE IF NOT EXISTS parents (
    id TEXT NOT NULL REFERENCES experts(id) ON DELETE CASCADE, parent TEXT NOT NULL, role TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS parents_parent_id ON parents(parent, id);
CREATE TABLE IF NOT EXISTS labels (
    id TEXT NOT NULL REFERENCES experts(id) ON DELETE CASCADE, label TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS labels_label_id ON labels(label, id);
CREATE TABLE IF NOT EXISTS metrics (
    id TEXT NOT NULL REFERENCES experts(id) ON DELETE CASCADE, key TEXT NOT NULL, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS metrics_key_id ON metrics(key, value, id);
CREATE TABLE IF NOT EXISTS tags (
    tag TEXT PRIMARY KEY, id TEXT NOT NULL REFERENCES experts(id) ON DELETE CASCADE);
DROP INDEX IF EXISTS expert_tasks_task;
DROP INDEX IF EXISTS parents_parent;
DROP INDEX IF EXISTS labels_label;
DROP INDEX IF EXISTS metrics_key;
"""
# The filter tables' indexes cover (value, id): a query reads the matching ids from the index alone, never the
# table (the older one-column indexes they replace are dropped when an index is opened).
_CHUNK = 8 * 1024 * 1024
_MMAP_BYTES = 1 << 30
_OLDEST_FIRST = operator.itemgetter(0, 1)  # (created_at, id) of a find row
MARKER_FILE = "zoo-registry.json"
REGISTRY_FORMAT = 1
#: SQLite's application_id for zoo indexes ("zoo1" in ASCII), so a foreign database is never taken for one.
APPLICATION_ID = 0x7A6F6F31
_DEBRIS = re.compile(r"\.?[0-9a-f]{32}(\.lock)?")


def _write_marker(root: Path) -> None:
    """Write ``zoo-registry.json`` atomically: the last step of making (or adopting) a registry."""
    tmp = root / (MARKER_FILE + ".tmp")
    tmp.write_text(json.dumps({"format": "zoo-registry", "version": REGISTRY_FORMAT}) + "\n")
    os.replace(tmp, root / MARKER_FILE)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalRegistry(Registry):
    """Experts in a local folder with an SQLite index. ``create=False`` refuses a folder that is not one."""

    def __init__(self, root: str | Path, create: bool = True):
        self.root = Path(root).expanduser()
        self.uri = str(self.root)
        self.unreadable: dict[str, str] = {}  # expert folders the index could not take: id -> reason
        self._swept = False
        marker = self.root / MARKER_FILE
        if not marker.exists():
            if not create:
                if self.root.is_dir() and any(self.root.iterdir()):
                    legacy = (self.root / "experts").is_dir() and (self.root / "index.sqlite").is_file()
                    raise ZooError(f"{self.root} is not a zoo registry (no {MARKER_FILE})" + (
                        "; if an earlier zoo made it, `zoo gc --adopt` marks it" if legacy else ""))
                raise RegistryNotFoundError(f"no registry at {self.root} (use --registry PATH, or add an expert to "
                                            f"create one)")
            self._create()
        self._check_marker(marker)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.root / "index.sqlite", timeout=60, isolation_level=None,
                                   check_same_thread=False)
        try:
            self._init_index()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise ZooError(f"{self.root / 'index.sqlite'}: not a readable zoo index ({e})") from None
        except ZooError:
            self._db.close()
            raise
        self.repair()
        self._analyze_once()

    @classmethod
    def adopt(cls, root: str | Path) -> "LocalRegistry":
        """Mark a registry made by a zoo before markers existed (an ``experts/`` folder of expert ids and an
        ``index.sqlite`` holding exactly zoo's tables), then open it. An explicit step: zoo never adopts a
        folder on its own."""
        root = Path(root).expanduser()
        if (root / MARKER_FILE).exists():
            return cls(root, create=False)
        db_path = root / "index.sqlite"
        if not (root / "experts").is_dir() or not db_path.is_file():
            raise ZooError(f"{root} has no experts/ folder and index.sqlite: nothing to adopt")
        strays = [p.name for p in (root / "experts").iterdir() if not is_expert_id(p.name)]
        if strays:
            raise ZooError(f"{root}/experts holds {strays[0]!r}, which is not an expert id: not adopting")
        expected = {"experts", "expert_tasks", "parents", "labels", "metrics", "tags"}
        try:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
            try:
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                          if not r[0].startswith("sqlite_")}
            finally:
                db.close()
        except sqlite3.DatabaseError as e:
            raise ZooError(f"{db_path}: not a readable SQLite index ({e})") from None
        if tables != expected:
            raise ZooError(f"{db_path} does not hold zoo's index tables (found: {', '.join(sorted(tables)) or 'none'})")
        db = sqlite3.connect(db_path, isolation_level=None)
        try:
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        finally:
            db.close()
        for sub in ("tmp", "trash"):
            (root / sub).mkdir(exist_ok=True)
        _write_marker(root)
        return cls(root, create=False)

    def _init_index(self) -> None:
        """Check the index is zoo's (its application id), or make one where the marked registry has none
        (the folders are the source of truth: :meth:`repair` then indexes them)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")  # one process at a time decides whether the index is new
        try:
            app = db.execute("PRAGMA application_id").fetchone()[0]
            if app == 0 and db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            elif app != APPLICATION_ID:
                raise ZooError(f"{self.root / 'index.sqlite'} is not a zoo index (application id {app:#x})")
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    db.execute(statement)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")
        # Reads through a memory map, not a read() per page: a query returning thousands of cards visits as
        # many pages, and this halves its SQLite time. SQLite remaps when the file changes size.
        db.execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")

    def _create(self) -> None:
        """Make a new registry: only in a folder that is absent or empty, marker written last."""
        if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            raise ZooError(f"{self.root} is not a zoo registry (no {MARKER_FILE}) and is not an empty folder: "
                           f"choose another folder (a registry made before markers: `zoo gc --adopt`)")
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("experts", "tmp", "trash"):
            (self.root / sub).mkdir(exist_ok=True)
        _write_marker(self.root)

    def _check_marker(self, marker: Path) -> None:
        try:
            data = json.loads(marker.read_text())
            ok = isinstance(data, dict) and data.get("format") == "zoo-registry" and isinstance(data.get("version"), int)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            ok = False
        if not ok:
            raise ZooError(f"{marker}: not a zoo registry marker")
        if data["version"] > REGISTRY_FORMAT:
            raise ZooError(f"{self.root}: registry format {data['version']} is newer than this zoo understands "
                           f"({REGISTRY_FORMAT})")
        for sub in ("experts", "tmp", "trash"):
            if not (self.root / sub).is_dir():
                raise ZooError(f"{self.root}: registry folder {sub}/ is missing")

    def __repr__(self) -> str:
        return f"LocalRegistry({str(self.root)!r})"

    def close(self) -> None:
        """Close the index connection."""
        self._db.close()

    # --- transactions and repair ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        # BEGIN IMMEDIATE takes the write lock up front, so concurrent writers queue instead of failing
        # halfway through with SQLITE_BUSY on upgrade.
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def repair(self) -> dict[str, int]:
        """Make the index agree with the folders (index new folders, drop rows whose folder is gone) and
        note, without indexing, the folders that cannot be read; return counts. Deletes no file."""
        counts = {"indexed": 0, "dropped": 0}
        self.unreadable = {}
        on_disk = {p.name for p in (self.root / "experts").iterdir() if is_expert_id(p.name)}
        indexed = {row[0] for row in self._db.execute("SELECT id FROM experts")}
        missing, dangling = on_disk - indexed, indexed - on_disk
        if missing or dangling:
            with self._transaction() as cur:
                for expert_id in dangling:
                    if not (self.root / "experts" / expert_id).exists():  # re-check: a writer may be mid-add
                        cur.execute("DELETE FROM experts WHERE id = ?", (expert_id,))
                        counts["dropped"] += 1
                for expert_id in missing:
                    reason = self._index_folder(cur, expert_id)
                    if reason is None:
                        counts["indexed"] += 1
                    else:
                        self.unreadable[expert_id] = reason
        return counts

    def _index_folder(self, cur: sqlite3.Cursor, expert_id: str) -> str | None:
        """Index one folder of experts/ inside the caller's transaction; the reason it cannot be, or None."""
        folder = self.root / "experts" / expert_id
        cur.execute("SAVEPOINT folder")
        try:
            card = Expert.load(folder).card
            if card.id != expert_id:
                raise CardError(f"folder {expert_id} holds a card for expert {card.id}")
            self._index(cur, card)
        except (ZooError, OSError, ValueError, OverflowError, RecursionError, sqlite3.IntegrityError) as e:
            cur.execute("ROLLBACK TO folder")
            cur.execute("RELEASE folder")
            return str(e)
        cur.execute("RELEASE folder")
        return None

    def sweep(self) -> int:
        """Delete debris of killed writers from tmp/ and trash/: only entries named as zoo names them whose
        lock no live writer holds. Anything else there is left alone. Returns the number removed."""
        removed = 0
        for sub in ("tmp", "trash"):
            for entry in list((self.root / sub).iterdir()):
                if not _DEBRIS.fullmatch(entry.name) or entry.is_symlink():
                    continue
                with contextlib.suppress(FileNotFoundError):  # a live writer may finish meanwhile
                    if self._abandoned(entry):
                        if entry.is_dir():
                            shutil.rmtree(entry, ignore_errors=True)
                        else:
                            entry.unlink()
                        removed += 1
        self._swept = True
        return removed

    def _analyze_once(self) -> None:
        # Table statistics let SQLite drive combined filters (task + architecture) from the selective index;
        # gather them once the index is big enough for the plan to matter (gc refreshes them).
        have = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone()
        if not have and len(self) >= 1000:
            self._db.execute("ANALYZE")

    @staticmethod
    def _abandoned(entry: Path) -> bool:
        # Every workspace folder X has a lock file X.lock that its writer holds (flock) from before the folder
        # exists until after it is gone; before that, the lock is created and locked as .X (pending). A lock we
        # can take, or a folder without a lock, was abandoned by a killed writer.
        if entry.is_dir():
            lock = entry.with_name(entry.name + ".lock")
            if not lock.exists():
                return True
            entry = lock
        try:
            fd = os.open(entry, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        if entry.suffix == ".lock":
            shutil.rmtree(entry.with_suffix(""), ignore_errors=True)
        return True

    @contextlib.contextmanager
    def _workspace(self, kind: str) -> Iterator[Path]:
        """A fresh folder under tmp/ or trash/, locked for the lifetime of the block, removed afterwards.
        The first write of this handle sweeps earlier writers' debris."""
        if not self._swept:
            self.sweep()
        while True:
            name = uuid.uuid4().hex
            pending = self.root / kind / ("." + name)
            fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                # Publish the lock under its final name only once it is held, so `repair` never takes a live
                # one. If a repair took the pending file for abandoned meanwhile, start again.
                os.rename(pending, self.root / kind / (name + ".lock"))
                break
            except FileNotFoundError:
                os.close(fd)
        folder = self.root / kind / name
        lock = folder.with_name(name + ".lock")
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            os.close(fd)

    @staticmethod
    def _index(cur: sqlite3.Cursor, card: ExpertCard) -> int:
        cur.execute("INSERT OR IGNORE INTO experts VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (card.id, card.digest, card.name, card.architecture, card.method, card.created_at,
                     card.to_json(indent=None)))
        if cur.rowcount == 0:
            return 0
        cur.executemany("INSERT INTO expert_tasks VALUES (?, ?, ?)", [(card.id, i, t) for i, t in enumerate(card.task_ids)])
        cur.executemany("INSERT INTO parents VALUES (?, ?, ?)", [(card.id, p.id, p.role) for p in card.parents])
        cur.executemany("INSERT INTO labels VALUES (?, ?)", [(card.id, x) for x in card.labels])
        cur.executemany("INSERT INTO metrics VALUES (?, ?, ?)",
                        [(card.id, k, v) for k, v in card.metrics.items() if v is not None])
        return 1

    # --- writing -------------------------------------------------------------------------------------------

    def add(self, expert: Expert | str | Path, progress: Callable[[int], Any] | None = None) -> ExpertCard:
        """Copy an expert folder into the registry, checking every file against its sha256 as it is copied.

        Adding an expert whose id is already present changes nothing. ``progress`` is called with the number
        of bytes copied after each chunk.
        """
        src = expert if isinstance(expert, Expert) else Expert.load(expert)
        card = src.card
        if (self.root / "experts" / card.id).exists():
            # Only the genuine content may find its id taken: a card claiming someone else's id is refused.
            check_content(src)
            self._ensure_indexed(card.id)
            return card
        with self._workspace("tmp") as tmp:
            tmp.mkdir()
            for fname, record in card.files.items():
                got = _copy_hashing(src.path / fname, tmp / fname, progress)
                if got.size != record.size or got.sha256 != record.sha256:
                    raise CorruptExpertError(f"{card.name} ({card.id}): {fname} does not match its sha256 in zoo.json "
                                             f"(modified, truncated or corrupted)")
                if fname.endswith(".safetensors"):
                    read_header(tmp / fname)
            _copy_hashing(src.path / CARD_FILE, tmp / CARD_FILE, None)
            # Re-parse what was copied: the stored card must be exactly the validated one, its config must
            # be safe to build, and its id must be the one its content gives.
            copied = Expert.load(tmp)
            copied.config()
            check_content(copied)
            return self._commit(tmp, copied.card)

    def save(self, model: Any, **card_fields: Any) -> ExpertCard:
        """Write a model straight into the registry as a new expert (see :func:`registry.write_expert`),
        without a copy through a temporary folder elsewhere."""
        with self._workspace("tmp") as tmp:
            card = write_expert(tmp, model, fsync=True, **card_fields).card
            return self._commit(tmp, card)

    def _commit(self, tmp: Path, card: ExpertCard) -> ExpertCard:
        _fsync_dir(tmp)
        target = self.root / "experts" / card.id
        # Index and rename are one unit: the row is written first inside the transaction, so a card the
        # index refuses never reaches experts/; the rename is the commit point; a crash after it but before
        # COMMIT leaves a complete, valid folder that the next open indexes.
        with self._transaction() as cur:
            self._index(cur, card)
            try:
                os.rename(tmp, target)  # the expert becomes visible whole, or not at all
            except OSError:
                if not target.exists():
                    raise
                # Another writer committed the same content first: adding it again is a no-op.
            _fsync_dir(target.parent)
        return card

    def _ensure_indexed(self, expert_id: str) -> None:
        if self._db.execute("SELECT 1 FROM experts WHERE id = ?", (expert_id,)).fetchone() is None:
            with self._transaction() as cur:
                self._index(cur, Expert.load(self.root / "experts" / expert_id).card)

    def remove(self, ref: str) -> ExpertCard | None:
        """Delete an expert: its folder leaves ``experts/`` atomically, then its index rows and tags go.
        A folder the index could not take (see :attr:`unreadable`) is removed by its id; None is returned."""
        if ref in self.unreadable:
            self._discard(ref)
            return None
        card = self.card(ref)
        self._discard(card.id)
        return card

    def _discard(self, expert_id: str) -> None:
        with self._workspace("trash") as trash:
            with self._transaction() as cur:
                cur.execute("DELETE FROM experts WHERE id = ?", (expert_id,))
                try:
                    os.rename(self.root / "experts" / expert_id, trash)
                except FileNotFoundError:
                    raise ExpertNotFoundError(f"expert {expert_id} was removed meanwhile from {self.uri}") from None
        self.unreadable.pop(expert_id, None)

    def tag(self, tag: str, ref: str) -> ExpertCard:
        """Point ``tag`` at the expert ``ref`` names, moving the tag if it exists."""
        validate_tag(tag)
        card = self.card(ref)
        try:
            with self._transaction() as cur:
                cur.execute("INSERT INTO tags VALUES (?, ?) ON CONFLICT(tag) DO UPDATE SET id = excluded.id",
                            (tag, card.id))
        except sqlite3.IntegrityError:  # the expert was removed between resolving it and tagging it
            raise ExpertNotFoundError(f"expert {card.id} was removed from {self.uri} meanwhile; nothing tagged") from None
        return card

    def untag(self, tag: str) -> None:
        """Remove a tag; an unknown tag is an error."""
        with self._transaction() as cur:
            cur.execute("DELETE FROM tags WHERE tag = ?", (tag,))
            if cur.rowcount == 0:
                raise ExpertNotFoundError(f"no tag {tag!r} in {self.uri}")

    def gc(self) -> dict[str, int]:
        """Delete debris of killed writers, rebuild every index row from its folder in one transaction (a
        damaged row is rewritten from the card on disk; tags are kept), remove the folders no index can take,
        and compact the database. Returns counts."""
        counts = {"debris": self.sweep(), "indexed": 0, "removed_unreadable": 0}
        self.unreadable = {}
        with self._transaction() as cur:
            tags = cur.execute("SELECT tag, id FROM tags").fetchall()
            cur.execute("DELETE FROM experts")  # every other table's rows go with it (ON DELETE CASCADE)
            for folder in sorted((self.root / "experts").iterdir()):
                if not is_expert_id(folder.name):
                    continue
                reason = self._index_folder(cur, folder.name)
                if reason is None:
                    counts["indexed"] += 1
                else:
                    self.unreadable[folder.name] = reason
            cur.executemany("INSERT INTO tags SELECT ?, id FROM experts WHERE id = ?", [(t, i) for t, i in tags])
        for expert_id in list(self.unreadable):
            self._discard(expert_id)
            counts["removed_unreadable"] += 1
        self._db.execute("ANALYZE")
        self._db.execute("VACUUM")
        return counts

    # --- reading -------------------------------------------------------------------------------------------

    def tags(self) -> dict[str, str]:
        """All tags, mapped to expert ids."""
        return dict(self._db.execute("SELECT tag, id FROM tags ORDER BY tag"))

    def resolve(self, ref: str) -> str:
        """The id of the expert a reference names (id, tag, name, id prefix)."""
        db = self._db
        if is_expert_id(ref) and db.execute("SELECT 1 FROM experts WHERE id = ?", (ref,)).fetchone():
            return ref
        row = db.execute("SELECT id FROM tags WHERE tag = ?", (ref,)).fetchone()
        if row:
            return row[0]
        row = db.execute("SELECT id FROM experts WHERE name = ? ORDER BY created_at DESC, id DESC LIMIT 1",
                         (ref,)).fetchone()
        if row:
            return row[0]
        if len(ref) >= 4 and all(c in "0123456789abcdef" for c in ref):
            rows = db.execute("SELECT id FROM experts WHERE id >= ? AND id < ? LIMIT 2",
                              (ref, ref + "g")).fetchall()
            if len(rows) == 1:
                return rows[0][0]
            if len(rows) > 1:
                raise AmbiguousReferenceError(f"id prefix {ref!r} matches several experts in {self.uri}; give more digits")
        raise ExpertNotFoundError(f"no expert {ref!r} in {self.uri} (not an id, id prefix, tag or name)")

    def card(self, ref: str) -> ExpertCard:
        """The card of the expert ``ref`` names."""
        expert_id = self.resolve(ref)
        row = self._db.execute("SELECT card FROM experts WHERE id = ?", (expert_id,)).fetchone()
        return ExpertCard.from_json(row[0])

    def get(self, ref: str) -> Expert:
        """The expert ``ref`` names, opened from its folder in the registry."""
        return Expert.load(self.root / "experts" / self.resolve(ref))

    def path(self, ref: str) -> Path:
        """The folder of the expert ``ref`` names."""
        return self.root / "experts" / self.resolve(ref)

    def find(self, query: Query | None = None) -> list[ExpertCard]:
        """Cards of matching experts, oldest first, answered from the SQLite index."""
        q = query or Query()
        where, args = [], []

        def any_of(sql: str, values: tuple[Any, ...]) -> None:  # OR within a field, AND across fields
            if values:
                where.append("(" + " OR ".join([sql] * len(values)) + ")")

        subqueries = {"task": "e.id IN (SELECT id FROM expert_tasks WHERE task = ?)",
                      "architecture": "e.architecture = ?", "name": "e.name = ?", "method": "e.method = ?",
                      "parent": "e.id IN (SELECT id FROM parents WHERE parent = ?)",
                      "tag": "e.id IN (SELECT id FROM tags WHERE tag = ?)",
                      "label": "e.id IN (SELECT id FROM labels WHERE label = ?)"}
        for field, sql in subqueries.items():
            any_of(sql, q.values(field))
            args += list(q.values(field))
        metrics = q.values("metric")
        if metrics:
            where.append("(" + " OR ".join(f"e.id IN (SELECT id FROM metrics WHERE key = ? AND value {m.op} ?)"
                                           for m in metrics) + ")")
            for m in metrics:
                args += [m.key, m.value]
        # Sorted here rather than by SQLite, whose sorter would carry every card's text along with its key.
        sql = "SELECT e.created_at, e.id, e.card FROM experts e" + (" WHERE " + " AND ".join(where) if where else "")
        with gc_paused():  # thousands of new objects (rows, then cards), no cycle among them: see gc_paused
            rows = self._db.execute(sql, args).fetchall()
            rows.sort(key=_OLDEST_FIRST)
            return [ExpertCard.from_json(row[2]) for row in rows]

    def metric_keys(self) -> set[str]:
        """Every metric name some expert records, from the index."""
        return {row[0] for row in self._db.execute("SELECT DISTINCT key FROM metrics")}

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM experts").fetchone()[0]

    def verify(self, refs: Iterable[str] | None = None) -> list[str]:
        """Check the chosen experts (all by default) file by file and re-derive their ids; list problems."""
        problems = []
        refs = list(refs or [])
        ids = [r if r in self.unreadable else self.resolve(r) for r in refs] if refs else [c.id for c in self.find()]
        if not refs:  # folders the index could not take are problems too, reported by name
            problems += [f"{i}: folder in experts/ cannot be indexed ({why}); `zoo rm {i}` or `zoo gc` removes it"
                         for i, why in sorted(self.unreadable.items())]
        for expert_id in ids:
            if expert_id in self.unreadable:
                problems.append(f"{expert_id}: {self.unreadable[expert_id]}")
                continue
            try:
                expert = Expert.load(self.root / "experts" / expert_id)
                if expert.card.id != expert_id:
                    raise CardError(f"{expert_id}: folder holds expert {expert.card.id}")
                expert.verify(deep=True)
            except (ZooError, OSError, ValueError) as e:
                problems.append(str(e))
        return problems


def _copy_hashing(src: Path, dst: Path, progress: Callable[[int], Any] | None) -> Any:
    """Copy a file, fsync the copy, and return the sha256 and size of **what was written**.

    The bytes are copied in the kernel (``copy_file_range``), then the copy is hashed from the page cache
    while a helper thread fsyncs it (both release the GIL): the hash costs little beyond the copy, and it
    vouches for the stored file itself, not for a source that could change underneath.
    """
    import hashlib
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    from .card import FileRecord

    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        copied = 0
        try:
            while copied < size:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), min(size - copied, 1 << 30))
                if n == 0:
                    break
                copied += n
                if progress:
                    progress(n)
        except OSError:  # a filesystem pair without copy_file_range: copy through user space
            fin.seek(copied)
            fout.seek(copied)
            shutil.copyfileobj(fin, fout, _CHUNK)
            if progress:
                progress(size - copied)
        fout.flush()
        with ThreadPoolExecutor(max_workers=1) as pool, open(dst, "rb") as check:
            synced = pool.submit(os.fsync, fout.fileno())
            digest = hashlib.file_digest(check, "sha256")
            written = os.fstat(check.fileno()).st_size
            synced.result()
    return FileRecord(digest.hexdigest(), written)


__all__ = ["LocalRegistry", "sha256_file"]
