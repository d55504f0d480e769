"""LocalRegistry: a folder of expert folders plus an SQLite index (the embedded default).

Layout of a registry folder::

    experts/<id>/...     one complete expert folder per id (the source of truth)
    index.sqlite         the query index (cards, tasks, parents, metrics, labels) and the tags
    tmp/                 experts being written (each with a lock held by its writer)
    trash/               experts being removed

Writes are atomic: files are written (fsync'd) into ``tmp/``, the folder is renamed into ``experts/`` (the
commit point), and the index is updated in one transaction. Whatever a killed process leaves behind is
repaired on the next open: folders without index rows are indexed, rows without folders are dropped, and
``tmp/`` and ``trash/`` entries whose writer is gone are deleted. SQLite's WAL mode and busy timeout let
several processes write at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .base import Query, Registry
from .card import CARD_FILE, ExpertCard
from .errors import AmbiguousReferenceError, CardError, CorruptExpertError, ExpertNotFoundError, ZooError
from .expert import Expert, sha256_file, write_expert
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
CREATE INDEX IF NOT EXISTS expert_tasks_task ON expert_tasks(task);
CREATE TABLE IF NOT EXISTS parents (
    id TEXT NOT NULL REFERENCES experts(id) ON DELETE CASCADE, parent TEXT NOT NULL, role TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS parents_parent ON parents(parent);
CREATE TABLE IF NOT EXISTS labels (
    id TEXT NOT NULL REFERENCES experts(id) ON DELETE CASCADE, label TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS labels_label ON labels(label);
CREATE TABLE IF NOT EXISTS metrics (
    id TEXT NOT NULL REFERENCES experts(id) ON DELETE CASCADE, key TEXT NOT NULL, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS metrics_key ON metrics(key, value);
CREATE TABLE IF NOT EXISTS tags (
    tag TEXT PRIMARY KEY, id TEXT NOT NULL REFERENCES experts(id) ON DELETE CASCADE);
"""
_CHUNK = 8 * 1024 * 1024


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
        db = self.root / "index.sqlite"
        if not db.exists() and not create:
            raise ZooError(f"no registry at {self.root} (use --registry PATH, or add an expert to create one)")
        for sub in ("experts", "tmp", "trash"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(db, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA.strip().split(";"):
            if statement.strip():
                self._db.execute(statement)
        self.repair()
        self._analyze_once()

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
        """Make the index agree with the folders and delete debris of killed writers; return counts."""
        counts = {"indexed": 0, "dropped": 0, "debris": 0}
        for sub in ("tmp", "trash"):
            for entry in list((self.root / sub).iterdir()):
                with contextlib.suppress(FileNotFoundError):  # a live writer may finish meanwhile
                    if self._abandoned(entry):
                        if entry.is_dir():
                            shutil.rmtree(entry, ignore_errors=True)
                        else:
                            entry.unlink()
                        counts["debris"] += 1
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
                    try:
                        card = Expert.load(self.root / "experts" / expert_id).card
                    except (ZooError, OSError):
                        continue  # left for `verify` to report; never indexed while unreadable
                    counts["indexed"] += self._index(cur, card)
        return counts

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
        """A fresh folder under tmp/ or trash/, locked for the lifetime of the block, removed afterwards."""
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
                     card.to_json()))
        if cur.rowcount == 0:
            return 0
        cur.executemany("INSERT INTO expert_tasks VALUES (?, ?, ?)", [(card.id, i, t) for i, t in enumerate(card.task_ids)])
        cur.executemany("INSERT INTO parents VALUES (?, ?, ?)", [(card.id, p.id, p.role) for p in card.parents])
        cur.executemany("INSERT INTO labels VALUES (?, ?)", [(card.id, x) for x in card.labels])
        cur.executemany("INSERT INTO metrics VALUES (?, ?, ?)", [(card.id, k, v) for k, v in card.metrics.items()])
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
            # Re-parse what was copied: the stored card must be exactly the validated one.
            stored = Expert.load(tmp).card
            src.config()  # config.json must parse
            return self._commit(tmp, stored)

    def save(self, model: Any, **card_fields: Any) -> ExpertCard:
        """Write a model straight into the registry as a new expert (see :func:`registry.write_expert`),
        without a copy through a temporary folder elsewhere."""
        with self._workspace("tmp") as tmp:
            card = write_expert(tmp, model, fsync=True, **card_fields).card
            return self._commit(tmp, card)

    def _commit(self, tmp: Path, card: ExpertCard) -> ExpertCard:
        _fsync_dir(tmp)
        target = self.root / "experts" / card.id
        try:
            os.rename(tmp, target)  # the commit point: the expert becomes visible whole, or not at all
        except OSError:
            if not target.exists():
                raise
            # Another writer committed the same content first: adding it again is a no-op.
        _fsync_dir(target.parent)
        with self._transaction() as cur:
            self._index(cur, Expert.load(target).card if target.exists() else card)
        return card

    def _ensure_indexed(self, expert_id: str) -> None:
        if self._db.execute("SELECT 1 FROM experts WHERE id = ?", (expert_id,)).fetchone() is None:
            with self._transaction() as cur:
                self._index(cur, Expert.load(self.root / "experts" / expert_id).card)

    def remove(self, ref: str) -> ExpertCard:
        """Delete an expert: its folder leaves ``experts/`` atomically, then its index rows and tags go."""
        card = self.card(ref)
        with self._workspace("trash") as trash:
            os.rename(self.root / "experts" / card.id, trash)
            with self._transaction() as cur:
                cur.execute("DELETE FROM experts WHERE id = ?", (card.id,))
        return card

    def tag(self, tag: str, ref: str) -> ExpertCard:
        """Point ``tag`` at the expert ``ref`` names, moving the tag if it exists."""
        validate_tag(tag)
        card = self.card(ref)
        with self._transaction() as cur:
            cur.execute("INSERT INTO tags VALUES (?, ?) ON CONFLICT(tag) DO UPDATE SET id = excluded.id", (tag, card.id))
        return card

    def untag(self, tag: str) -> None:
        """Remove a tag; an unknown tag is an error."""
        with self._transaction() as cur:
            cur.execute("DELETE FROM tags WHERE tag = ?", (tag,))
            if cur.rowcount == 0:
                raise ExpertNotFoundError(f"no tag {tag!r} in {self.uri}")

    def gc(self) -> dict[str, int]:
        """Delete debris (abandoned writes and removals), re-sync the index, and compact the database."""
        counts = self.repair()
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
        if q.task is not None:
            where.append("e.id IN (SELECT id FROM expert_tasks WHERE task = ?)")
            args.append(q.task)
        for column, value in (("architecture", q.architecture), ("name", q.name), ("method", q.method)):
            if value is not None:
                where.append(f"e.{column} = ?")
                args.append(value)
        if q.parent is not None:
            where.append("e.id IN (SELECT id FROM parents WHERE parent = ?)")
            args.append(q.parent)
        if q.tag is not None:
            where.append("e.id IN (SELECT id FROM tags WHERE tag = ?)")
            args.append(q.tag)
        if q.label is not None:
            where.append("e.id IN (SELECT id FROM labels WHERE label = ?)")
            args.append(q.label)
        if q.metric is not None:
            where.append(f"e.id IN (SELECT id FROM metrics WHERE key = ? AND value {q.metric.op} ?)")
            args += [q.metric.key, q.metric.value]
        sql = "SELECT card FROM experts e" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY e.created_at, e.id"
        return [ExpertCard.from_json(row[0]) for row in self._db.execute(sql, args)]

    def metric_keys(self) -> set[str]:
        """Every metric name some expert records, from the index."""
        return {row[0] for row in self._db.execute("SELECT DISTINCT key FROM metrics")}

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM experts").fetchone()[0]

    def verify(self, refs: Iterable[str] | None = None) -> list[str]:
        """Check the chosen experts (all by default) file by file and re-derive their ids; list problems."""
        problems = []
        ids = [self.resolve(r) for r in refs] if refs else [c.id for c in self.find()]
        for expert_id in ids:
            try:
                expert = Expert.load(self.root / "experts" / expert_id)
                if expert.card.id != expert_id:
                    raise CardError(f"{expert_id}: folder holds expert {expert.card.id}")
                expert.verify(deep=True)
            except (ZooError, OSError, json.JSONDecodeError) as e:
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
