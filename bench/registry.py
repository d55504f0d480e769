#!/usr/bin/env python3
"""Benchmark of the local registry (``registry.LocalRegistry``), against plain file I/O on the same disk.

Measured in one run, side by side:

1. ``add`` throughput of a large expert (~100 MB of float32 weights) against a plain copy of the same files
   (``shutil.copyfile`` of every file of the expert folder, then ``fsync`` of each copy, since ``add`` fsyncs).
2. ``get(id).state_dict()`` throughput (read + sha256 check + safetensors parse) against ``Path.read_bytes``
   of the same weight files, and the latency of ``get(id)`` alone (resolving the id and opening the card).
3. ``find`` / ``card`` latency and registry open time with 10,000 real (tiny) experts indexed. They are
   written with ``write_expert`` into ``experts/<id>/`` and indexed by ``LocalRegistry``'s ``repair()`` on
   open (``--build save`` uses ``LocalRegistry.save`` instead: it is fsync-bound, about six fsyncs per expert,
   and took 1 to 5 minutes for 10,000 on a small VM). The building runs in a worker process; the queries
   are timed in this one, which only opens the registry, as a user's process does. A sample of ``save``
   calls is then timed into the full registry (in the worker).

Nothing is dropped from the page cache: the source files of ``add`` and of the plain copy, and the files
read by ``get``, are all served from the page cache, so the figures compare CPU and write cost, not disk reads.
Each timed ``add`` or copy starts after ``os.sync()``, so that no run pays for the previous run's dirty pages.
Add and copy runs are interleaved, and every figure is a median.

Usage::

    python bench/registry.py              # full run (~100 MB expert, 10,000 experts), a few minutes
    python bench/registry.py --quick      # small run (~20 MB expert, 1,000 experts), to check it works
    python bench/registry.py --markdown   # also print the tables as markdown (for BENCHMARKS.md)

``make bench`` runs the full benchmark. Temporary folders are created under ``--dir`` (default: the system
temporary folder) and removed at the end.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench.common import Table, machine_summary, med, print_markdown  # noqa: E402

import torch  # noqa: E402

from registry import LocalRegistry, MetricFilter, ParentRef, Query, write_expert  # noqa: E402
from registry.expert import sha256_file, weight_files  # noqa: E402
from zoo.models import create_model  # noqa: E402

MB = 1_000_000  # throughputs are in MB/s with MB = 10^6 bytes


# --- machine ---------------------------------------------------------------------------------------------

def _filesystem(path: Path) -> str:
    """Type and device of the filesystem holding ``path`` (longest matching mount point in /proc/mounts)."""
    real = os.path.realpath(path)
    best = ("", "?", "?")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype = line.split()[:3]
            mnt = mnt.replace("\\040", " ")
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                best = (mnt, fstype, dev)
    except OSError:
        pass
    return f"{best[1]} ({best[2]} on {best[0] or '?'})"


def machine_line(base: Path) -> str:
    """The machine, and the filesystem the benchmark writes to."""
    return f"{machine_summary()}; temp dir {base} on {_filesystem(base)}"


# --- timing and tables -----------------------------------------------------------------------------------

def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn``."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, round(0.95 * len(xs)) - 1)]


def ms(xs: list[float], digits: int = 2) -> list[str]:
    """median, p95 and max of a series of seconds, in milliseconds."""
    return [f"{f(xs) * 1e3:.{digits}f}" for f in (med, p95, max)]


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def _plain_copy(src: Path, dst: Path) -> None:
    """The baseline for ``add``: copy every file of the expert folder and fsync each copy."""
    dst.mkdir()
    for f in _folder_files(src):
        target = dst / f.name
        shutil.copyfile(f, target)
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- 1 + 2: add and get of a large expert ------------------------------------------------------------------

def big_model(size_mb: float) -> torch.nn.Module:
    """An MLP whose float32 weights take about ``size_mb`` MB (square hidden layers)."""
    hidden = 1024 if size_mb <= 40 else 2048
    depth = max(1, round(size_mb * MB / 4 / (hidden * hidden)))
    torch.manual_seed(0)
    return create_model("mlp", 10, in_features=hidden, hidden=hidden, depth=depth)


def bench_io(base: Path, size_mb: float, repeats: int, latency_reps: int) -> list[Table]:
    work = Path(tempfile.mkdtemp(prefix="zoo-bench-io-", dir=base))
    try:
        model = big_model(size_mb)
        src = write_expert(work / "src", model, name="big-mlp", tasks=[(0, range(10))], method="finetune",
                           metrics={"accuracy": 0.9})
        del model
        files = _folder_files(src.path)
        total = sum(f.stat().st_size for f in files)
        weights = [src.path / f for f in weight_files(src.card)]
        wbytes = sum(f.stat().st_size for f in weights)
        print(f"  expert: {len(files)} files, {total / MB:.1f} MB ({wbytes / MB:.1f} MB of weights)", flush=True)

        # 1. add vs plain copy: a fresh registry (and a fresh copy folder) per run, removed outside the timing.
        def run_add(i: int) -> float:
            reg = LocalRegistry(work / f"reg{i}")
            os.sync()  # no dirty pages left over from the previous run
            t0 = time.perf_counter()
            reg.add(src)
            dt = time.perf_counter() - t0
            reg.close()
            shutil.rmtree(work / f"reg{i}")
            return dt

        def run_copy(i: int) -> float:
            os.sync()
            t0 = time.perf_counter()
            _plain_copy(src.path, work / f"copy{i}")
            dt = time.perf_counter() - t0
            shutil.rmtree(work / f"copy{i}")
            return dt

        run_add(-1), run_copy(-1)  # warm-up (imports, first allocations), not counted
        add_t, copy_t = [], []
        for i in range(repeats):  # interleaved, alternating which goes first
            if i % 2:
                add_t.append(run_add(i))
                copy_t.append(run_copy(i))
            else:
                copy_t.append(run_copy(i))
                add_t.append(run_add(i))
        hash_t = timed(lambda: [sha256_file(f) for f in files], repeats)

        t1 = Table(f"add of a {total / MB:.0f} MB expert (median of {repeats}; source in page cache)",
                   ["operation", "median s", "MB/s", "vs plain copy"])
        copy_rate = total / MB / med(copy_t)
        add_rate = total / MB / med(add_t)
        t1.add("plain copy: shutil.copyfile + fsync, every file", f"{med(copy_t):.3f}", f"{copy_rate:.0f}", "1.00")
        t1.add("LocalRegistry.add (copy + sha256 + fsync + index)", f"{med(add_t):.3f}", f"{add_rate:.0f}",
               f"{add_rate / copy_rate:.2f}")
        hash_rate = total / MB / med(hash_t)
        t1.add("(reference) sha256 of every file, no copy", f"{med(hash_t):.3f}", f"{hash_rate:.0f}",
               f"{hash_rate / copy_rate:.2f}")
        serial = med(copy_t) + med(hash_t)
        t1.add("(reference) plain copy + sha256, one after the other (sum)", f"{serial:.3f}",
               f"{total / MB / serial:.0f}", f"{med(copy_t) / serial:.2f}")

        # 2. get: one registry holding the expert.
        reg = LocalRegistry(work / "reg-get")
        reg.add(src)
        eid = src.card.id
        expert = reg.get(eid)
        stored = [expert.path / f for f in weight_files(expert.card)]
        reg.get(eid).state_dict()  # warm-up
        sd_t, rb_t, rv_t = [], [], []
        for _ in range(repeats):  # interleaved
            sd_t += timed(lambda: reg.get(eid).state_dict(), 1)
            rb_t += timed(lambda: [f.read_bytes() for f in stored], 1)
            rv_t += timed(lambda: [hashlib.sha256(f.read_bytes()).hexdigest() for f in stored], 1)
        get_t = timed(lambda: reg.get(eid), latency_reps)
        card_t = timed(lambda: reg.card(eid), latency_reps)
        reg.close()

        t2 = Table(f"get of the same expert ({wbytes / MB:.0f} MB of weights; median of {repeats}; page cache)",
                   ["operation", "median s", "MB/s", "vs plain read"])
        rb_rate = wbytes / MB / med(rb_t)
        sd_rate = wbytes / MB / med(sd_t)
        rv_rate = wbytes / MB / med(rv_t)
        t2.add("plain read: Path.read_bytes of the weight files", f"{med(rb_t):.3f}", f"{rb_rate:.0f}", "1.00")
        t2.add("get(id).state_dict() (read + sha256 + parse)", f"{med(sd_t):.3f}", f"{sd_rate:.0f}",
               f"{sd_rate / rb_rate:.2f}")
        t2.add("(reference) read, then sha256, one after the other", f"{med(rv_t):.3f}", f"{rv_rate:.0f}",
               f"{rv_rate / rb_rate:.2f}")
        t3 = Table(f"opening without reading weights ({latency_reps} calls)", ["operation", "median ms", "p95 ms", "max ms"])
        t3.add("get(id) (resolve + parse zoo.json + stat files)", *ms(get_t, 3))
        t3.add("card(id) (resolve + parse card from SQLite)", *ms(card_t, 3))
        return [t1, t2, t3]
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- 3: find with many experts -------------------------------------------------------------------------------

ARCHS = {  # tiny but real models: the registry's cost per expert does not depend much on the weights' size
    "mlp": dict(in_features=16, hidden=8, depth=1),
    "convnet": dict(in_chans=1, width=2),
    "lenet5": dict(in_chans=1, img_size=16),
}
METHODS = ["finetune", "ewc", "lwf", "replay"]


class Population:
    """A reproducible stream of varied experts: 3 architectures, ``n_tasks`` tasks (a fifth of the experts
    cover two), names ``<arch>-<method>-t<task>``, a parent each (a recent expert of the same architecture),
    accuracy/forgetting metrics and a few labels. Records what the queries need."""

    def __init__(self, n_tasks: int):
        self.n_tasks = n_tasks
        self.rng = random.Random(0)
        self.models: dict[tuple[str, int], torch.nn.Module] = {}
        for arch, kw in ARCHS.items():
            for k in (1, 2):
                torch.manual_seed(len(self.models))
                self.models[arch, k] = create_model(arch, 2 * k, **kw)
        self.by_arch: dict[str, list[ParentRef]] = {a: [] for a in ARCHS}
        self.best: dict[int, tuple[float, str]] = {}
        self.ids: list[str] = []
        self.names: dict[tuple[str, int], str] = {}
        self.children: dict[str, int] = {}

    def next(self) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The model and the ``write_expert`` / ``save`` fields of the next expert."""
        rng, i = self.rng, len(self.ids)
        arch = rng.choices(list(ARCHS), weights=[5, 3, 2])[0]
        t = i % self.n_tasks
        task_ids = [t, (t + 1) % self.n_tasks] if rng.random() < 0.2 else [t]
        model = self.models[arch, len(task_ids)]
        with torch.no_grad():
            model.head.bias[0] = float(i)  # distinct weights, so distinct ids
        method = "pretrain" if not self.by_arch[arch] else rng.choice(METHODS)
        fields = dict(
            name=f"{arch}-{method}-t{t:02d}", tasks=[(tt, range(2 * tt, 2 * tt + 2)) for tt in task_ids],
            parents=[rng.choice(self.by_arch[arch][-50:])] if self.by_arch[arch] else [], method=method,
            hyperparameters={"lr": rng.choice([0.1, 0.01, 0.001]), "epochs": rng.choice([1, 5, 10])}, seed=i,
            metrics={"accuracy": round(rng.uniform(0.5, 1.0), 4), "forgetting": round(rng.uniform(0, 0.3), 4)},
            labels=[x for x, p in (("baseline", 0.1), ("paper", 0.05)) if rng.random() < p])
        return model, fields

    def record(self, card: Any) -> None:
        t = card.task_ids[0]
        self.by_arch[card.architecture].append(ParentRef(card.id, card.digest, "base"))
        self.ids.append(card.id)
        self.names.setdefault((card.architecture, t), card.name)
        for parent in card.parents:
            self.children[parent.id] = self.children.get(parent.id, 0) + 1
        acc = card.metrics["accuracy"]
        if acc > self.best.get(t, (-1.0, ""))[0]:
            self.best[t] = (acc, card.id)


def build_many(root: Path, n: int, pop: Population, mode: str) -> tuple[LocalRegistry, list[tuple[str, float]]]:
    """Put ``n`` tiny real experts in a (new) registry at ``root``; return it and the timed build steps.

    ``mode="repair"`` writes the expert folders with ``write_expert`` (no fsync) straight into
    ``experts/<id>/`` and lets ``LocalRegistry(root)`` index them (its ``repair``, the real reconciliation
    path); ``mode="save"`` writes each with ``LocalRegistry.save`` (fsync'd, the normal path, but bound by
    fsync latency: about six fsyncs per expert).
    """
    steps = []
    if mode == "save":
        reg = LocalRegistry(root)
        t0 = time.perf_counter()
        for _ in range(n):
            model, fields = pop.next()
            pop.record(reg.save(model, **fields))
        steps.append((f"LocalRegistry.save x {n:,} (write + fsync + index)", time.perf_counter() - t0))
    else:
        LocalRegistry(root).close()  # an empty, marked registry; its folders are then written directly
        staging = root.parent / "staging"
        t0 = time.perf_counter()
        for _ in range(n):
            model, fields = pop.next()
            card = write_expert(staging, model, **fields).card
            os.rename(staging, root / "experts" / card.id)
            pop.record(card)
        steps.append((f"write_expert x {n:,} into experts/<id>/ (no fsync, not indexed)", time.perf_counter() - t0))
        t0 = time.perf_counter()
        reg = LocalRegistry(root)  # repair() finds and indexes every folder
        steps.append((f"LocalRegistry(root) whose repair() indexes the {n:,} folders", time.perf_counter() - t0))
    for t, (_, eid) in sorted(pop.best.items()):
        reg.tag(f"t{t:02d}:best", eid)
    reg.tag("latest", pop.ids[-1])
    # Flush what was written without fsync, so that the timings below do not compete with its writeback.
    t0 = time.perf_counter()
    os.sync()
    steps.append(("os.sync() after the build (writes back what was not fsync'd)", time.perf_counter() - t0))
    return reg, steps


def _fsync_latency(folder: Path, n: int = 50) -> list[float]:
    """Seconds to write and fsync a new 4 KiB file (the unit cost that ``save`` pays about six times)."""
    out = []
    for i in range(n):
        path = folder / f"fsync-probe-{i}"
        t0 = time.perf_counter()
        with open(path, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        out.append(time.perf_counter() - t0)
        path.unlink()
    return out


# The registry is built in a worker process, and the queries are timed in this one, which only opens it: as
# a user's process meets a registry. The builder's heap (100,000 models written, the population's records)
# is not what a query runs beside, and it made every query slower (its allocations scattered the memory).
_BUILT: dict[str, Any] = {}


def _build_job(root: Path, n: int, n_tasks: int, mode: str) -> dict[str, Any]:
    """In the worker: build the registry, tag it, close it; return what the queries need."""
    pop = Population(n_tasks)
    reg, steps = build_many(root, n, pop, mode)
    assert len(reg) == n, (len(reg), n)
    reg.close()
    _BUILT["pop"] = pop
    return {"steps": steps, "names": pop.names, "children": pop.children, "ids": pop.ids}


def _save_job(root: Path, k: int) -> list[float]:
    """In the worker: time ``k`` more ``LocalRegistry.save`` calls into the full registry."""
    pop, reg, out = _BUILT["pop"], LocalRegistry(root), []
    for _ in range(k):
        model, fields = pop.next()
        t0 = time.perf_counter()
        pop.record(reg.save(model, **fields))
        out.append(time.perf_counter() - t0)
    reg.close()
    return out


def bench_find(base: Path, n: int, n_tasks: int, reps: int, mode: str, save_sample: int,
               analyze: bool = False) -> list[Table]:
    work = Path(tempfile.mkdtemp(prefix="zoo-bench-find-", dir=base))
    try:
        root = work / "reg"
        print(f"  building {n:,} experts ({mode}) in a worker process ...", flush=True)
        with multiprocessing.get_context("spawn").Pool(1) as builder:
            built = builder.apply(_build_job, (root, n, n_tasks, mode))
            steps = built["steps"]
            print(f"  built in {sum(s for _, s in steps):.1f} s", flush=True)
            tables = _time_queries(root, n, n_tasks, reps, built, analyze)
            build = Table("building the registry", ["operation", "experts", "total s", "ms per expert"])
            for label, s in steps:
                build.add(label, f"{n:,}", f"{s:.1f}", f"{s / n * 1e3:.2f}")
            if save_sample:
                # The normal write path, timed at scale: more experts saved into the full registry.
                fs_before = _fsync_latency(work)
                save_t = builder.apply(_save_job, (root, save_sample))
                build.add(f"LocalRegistry.save into that registry (median of {save_sample})", f"{save_sample:,}",
                          f"{sum(save_t):.1f}", f"{med(save_t) * 1e3:.2f}")
                fs_after = _fsync_latency(work)
                build.add("(reference) write + fsync of a new 4 KiB file, before / after the saves", "-", "-",
                          f"{med(fs_before) * 1e3:.2f} / {med(fs_after) * 1e3:.2f}")
        return [build, *tables]
    finally:
        t0 = time.perf_counter()
        shutil.rmtree(work, ignore_errors=True)
        print(f"  removed the registry in {time.perf_counter() - t0:.1f} s", flush=True)


def _time_queries(root: Path, n: int, n_tasks: int, reps: int, built: dict[str, Any],
                  analyze: bool) -> list[Table]:
    """Open the built registry here and time each query."""
    reg = LocalRegistry(root)
    gc.collect()
    names, children, ids = built["names"], built["children"], built["ids"]
    task = 7 % min(n_tasks, n)
    name = names.get(("mlp", task)) or next(iter(names.values()))
    parent, n_children = max(children.items(), key=lambda kv: (kv[1], kv[0]), default=("0" * 16, 0))
    some_id = ids[len(ids) // 2]
    prefix = some_id[:6]
    while sum(x.startswith(prefix) for x in ids) > 1:
        prefix = some_id[:len(prefix) + 1]
    queries: list[tuple[str, Callable[[], Any], int]] = [
        (f"find(Query(task={task}))", lambda: reg.find(Query(task=task)), reps),
        (f"find(Query(architecture='convnet', task={task}))",
         lambda: reg.find(Query(architecture="convnet", task=task)), reps),
        (f"find(Query(name='{name}'))", lambda: reg.find(Query(name=name)), reps),
        (f"find(Query(tag='t{task:02d}:best'))", lambda: reg.find(Query(tag=f"t{task:02d}:best")), reps),
        ("find(Query(metric=accuracy>=0.99))",
         lambda: reg.find(Query(metric=MetricFilter.parse("accuracy>=0.99"))), reps),
        ("find(Query(label='paper'))", lambda: reg.find(Query(label="paper")), reps),
        ("find(Query(parent=<id>))", lambda: reg.find(Query(parent=parent)), reps),
        ("find() (every expert, for scale)", lambda: reg.find(), max(3, reps // 10)),
    ]
    if analyze:
        reg._db.execute("ANALYZE")  # not done by the library: shows the effect of planner statistics
    table = Table(f"{n:,} experts indexed ({n_tasks} tasks, {len(ARCHS)} architectures); "
                  f"{reps} calls each unless noted" + ("; after ANALYZE" if analyze else ""),
                  ["operation", "results", "median ms", "p95 ms", "max ms"])
    for label, fn, r in queries:
        count = len(fn())
        ts = timed(fn, r)
        table.add(label + ("" if r == reps else f" [{r} calls]"), f"{count:,}", *ms(ts))
    assert n_children == len(reg.find(Query(parent=parent)))
    # What a query returning thousands of cards cannot avoid, timed beside it: SQLite fetching the matching
    # rows' text (the same connection settings), and json.loads of that text (no validation, no card).
    raw = sqlite3.connect(root / "index.sqlite")
    raw.execute("PRAGMA mmap_size = 1073741824")
    for what, sql, arg in ((f"task={task}", "SELECT card FROM experts WHERE id IN "
                            "(SELECT id FROM expert_tasks WHERE task = ?)", task),
                           ("label='paper'", "SELECT card FROM experts WHERE id IN "
                            "(SELECT id FROM labels WHERE label = ?)", "paper")):
        texts = [row[0] for row in raw.execute(sql, (arg,))]
        table.add(f"(reference) SQLite alone: the {what} rows' text", f"{len(texts):,}",
                  *ms(timed(lambda: raw.execute(sql, (arg,)).fetchall(), reps)))
        table.add("(reference) json.loads of those rows, no validation", f"{len(texts):,}",
                  *ms(timed(lambda: [json.loads(t) for t in texts], reps)))
    raw.close()
    for label, fn in ((f"card('{prefix}') (id prefix)", lambda: reg.card(prefix)),
                      ("card(<full id>)", lambda: reg.card(some_id)),
                      (f"card('t{task:02d}:best') (tag)", lambda: reg.card(f"t{task:02d}:best")),
                      (f"card('{name}') (name: newest)", lambda: reg.card(name)),
                      ("get(<full id>)", lambda: reg.get(some_id))):
        fn()
        ts = timed(fn, reps)
        table.add(label, "1", *ms(ts, 3))
    reg.close()
    open_reps = max(5, reps // 5)
    # A find as a new process makes it: the first query on a freshly opened registry (its SQLite cache
    # empty; the file in the OS page cache, as it is after any recent use).
    fresh = []
    for _ in range(open_reps):
        other = LocalRegistry(root)
        t0 = time.perf_counter()
        found = other.find(Query(task=task))
        fresh.append(time.perf_counter() - t0)
        other.close()
    table.add(f"find(Query(task={task})), first call on a fresh handle [{open_reps} handles]",
              f"{len(found):,}", *ms(fresh))

    def open_close() -> None:
        LocalRegistry(root).close()

    ts = timed(open_close, open_reps)
    table.add(f"LocalRegistry(root) (open + repair check) [{open_reps} calls]", "-", *ms(ts))
    return [table]


# --- main ----------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run: ~20 MB expert, 1,000 experts")
    ap.add_argument("--markdown", action="store_true", help="also print the tables as markdown")
    ap.add_argument("--dir", type=Path, default=None, help="where to create the temporary folders")
    ap.add_argument("--size-mb", type=float, default=None, help="size of the large expert (default 100; quick 20)")
    ap.add_argument("--experts", type=int, default=None, help="experts indexed for find (default 10000; quick 1000)")
    ap.add_argument("--tasks", type=int, default=50, help="distinct tasks among them (default 50)")
    ap.add_argument("--repeats", type=int, default=None, help="runs of add/get (default 9; quick 3)")
    ap.add_argument("--reps", type=int, default=None, help="calls per find query (default 50; quick 20)")
    ap.add_argument("--build", choices=["repair", "save"], default="repair",
                    help="how the many experts are created: write_expert + repair (default) or LocalRegistry.save")
    ap.add_argument("--save-sample", type=int, default=None,
                    help="LocalRegistry.save calls timed into the full registry (default 200; quick 50; 0: none)")
    ap.add_argument("--analyze", action="store_true",
                    help="run SQLite ANALYZE on the index before timing find (not something the library does)")
    ap.add_argument("--skip", choices=["io", "find"], action="append", default=[], help="skip a part")
    args = ap.parse_args(argv)
    size_mb = args.size_mb or (20 if args.quick else 100)
    n = args.experts or (1000 if args.quick else 10_000)
    repeats = args.repeats or (3 if args.quick else 9)
    reps = args.reps or (20 if args.quick else 50)
    save_sample = args.save_sample if args.save_sample is not None else (50 if args.quick else 200)
    base = (args.dir or Path(tempfile.gettempdir())).resolve()
    base.mkdir(parents=True, exist_ok=True)

    machine = machine_line(base)
    print(f"machine: {machine}\n", flush=True)
    started = time.perf_counter()
    tables: list[Table] = []
    if "io" not in args.skip:
        print(f"[1-2] add and get of a ~{size_mb:g} MB expert", flush=True)
        t0 = time.perf_counter()
        for t in bench_io(base, size_mb, repeats, reps):
            print("\n" + t.text() + "\n", flush=True)
            tables.append(t)
        print(f"  [1-2] took {time.perf_counter() - t0:.0f} s\n", flush=True)
    if "find" not in args.skip:
        print(f"[3] find with {n:,} experts", flush=True)
        t0 = time.perf_counter()
        for t in bench_find(base, n, args.tasks, reps, args.build, save_sample, args.analyze):
            print("\n" + t.text() + "\n", flush=True)
            tables.append(t)
        print(f"  [3] took {time.perf_counter() - t0:.0f} s (clean-up included)\n", flush=True)
    print(f"total time {time.perf_counter() - started:.0f} s")
    if args.markdown:
        print_markdown(machine, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
