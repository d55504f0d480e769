#!/usr/bin/env python3
"""Benchmark of BMC's consolidation hot path (the batched live teacher) and of the expert executors.

Measured in one run, side by side:

1. **Consolidation steps per second** with ``teacher: live``, for K experts (default K = 1, 4, 16), with the
   K experts run as one batched forward (``zoo.consolidate.BatchedTeacher``: stacked parameters + ``vmap``)
   against the per-expert loop (``zoo.consolidate.looped_features``). The real code path is timed:
   ``zoo.consolidate.consolidate(...)`` runs with ``teacher: live``, a fixed ``steps_per_epoch`` and a few
   epochs, once with ``teacher_batching: batched`` and once with ``teacher_batching: looped``. One
   step is everything consolidate() does per minibatch: sample a task-balanced minibatch, augment the K new
   buffers' samples, the K experts' features on their own chunks, the student's forward + masked CE +
   feature MSE, backward and the AdamW step. The minibatch is consolidate()'s own: ``batch_size`` (default
   64, the reference value) split evenly over the K buffers (no memory buffers), so each expert scores a
   chunk of ``64 // K`` samples and the student always sees 64. An epoch's step time runs from the end of one
   validation pass to the start of the next (``zoo.consolidate._validate`` is wrapped to record its start and
   end; the CUDA device is synchronised at both marks), so validation is not counted; the first epoch of
   every call is warm-up. Defaults: 4 steps per epoch on the CPU (25 on CUDA), 2 timed epochs, 3 rounds.
   Figures are medians over the timed epochs of all calls; batched and looped calls alternate (``--rounds``)
   so that a busy machine slows both alike. The teacher call is also timed inside the same runs (CUDA events
   on a GPU, so no extra synchronisation), which gives its share of the step and the ceiling of the ratio.
2. **The teacher forward alone**, where vmap acts: ``BatchedTeacher(x)`` against ``looped_features(experts,
   x)`` for ``x`` of shape (K, chunk, ...), interleaved repetitions, medians; plus the one-off cost of
   building the ``BatchedTeacher``. On CUDA the teacher is timed in float32 and, as consolidate() runs it,
   under bf16 autocast.
3. **Executors**: 4 real BMC expert jobs (``zoo.methods.bmc.train_expert_job``, jobs built as ``BMC._regularise``
   builds them: an MLP on 64-d inputs (digits' input size) trained on 8,000 samples of Gaussian class clusters
   for 12 epochs with the stability loss against the base on 500 memory samples, then its buffer; about 2 s
   per job on one thread) on the ``local``, ``process`` and ``ray`` executors, on the CPU. *Cold* is making
   the executor plus the first ``map`` (for Ray this includes starting a local Ray and its workers; for the
   process pool, spawning the workers); *warm* is the median of 3 later ``map`` calls on the same executor.
   Process and Ray workers run one torch thread per job; the local executor runs in this process.

Architectures: ``resnet32`` on 3x32x32 inputs (CIFAR-like random data) and ``mlp`` on 64-d inputs. Runs on
the CPU always and also on CUDA when ``torch.cuda.is_available()`` (bf16 autocast and channels_last there, as
consolidate() and ``prepare_model`` use them).

CPU figures depend a lot on other load: with torch's default thread count, a second busy process on a small
machine makes every OpenMP region wait for a descheduled thread, which hits the many small ops of the looped
teacher hardest. ``--threads 1`` gives steadier CPU figures there; the load average is printed with each row.

Usage::

    python bench/consolidate.py              # full run (a few minutes on 2 cores)
    python bench/consolidate.py --quick      # fast smoke run
    python bench/consolidate.py --markdown   # also print the tables as markdown (for BENCHMARKS.md)
    python bench/consolidate.py --threads 1  # one torch thread in this process (steadier on a busy machine)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import copy
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench.common import Table, machine_summary, med, print_markdown, sync  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

import zoo.consolidate as zc  # noqa: E402
from zoo.buffer import Buffer  # noqa: E402
from zoo.models import create_model  # noqa: E402
from zoo.train import autocast, prepare_model  # noqa: E402

ARCHS: dict[str, tuple[tuple[int, ...], dict[str, Any]]] = {
    "resnet32": ((3, 32, 32), {}),
    "mlp": ((64,), {"in_features": 64}),
}
CLASSES_PER_TASK = 5


# --- machine ---------------------------------------------------------------------------------------------

def machine_line() -> str:
    """The machine, GPU, torch threads and Ray version."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    try:
        import ray

        ray_s = f", ray {ray.__version__}"
    except ImportError:
        ray_s = ", no ray"
    return f"{machine_summary()} ({torch.get_num_threads()} threads); {gpu}{ray_s}"


def load_line() -> str:
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average ?"


# --- timing and tables -----------------------------------------------------------------------------------

# --- 1. consolidation steps/s --------------------------------------------------------------------------------

class TeacherClock:
    """Times every teacher call inside the real loop: CUDA events on a GPU (no extra synchronisation), the
    wall clock on a CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pending: list[Any] = []

    def wrap(self, cls: type) -> type:
        clock = self

        class Timed(cls):  # type: ignore[misc, valid-type]
            def __call__(self, x: torch.Tensor) -> torch.Tensor:
                if clock.device.type == "cuda":
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    out = super().__call__(x)
                    end.record()
                    clock.pending.append((start, end))
                    return out
                t0 = time.perf_counter()
                out = super().__call__(x)
                clock.pending.append(time.perf_counter() - t0)
                return out

        return Timed

    def seconds(self) -> list[float]:
        sync(self.device)
        return [p if isinstance(p, float) else p[0].elapsed_time(p[1]) / 1e3 for p in self.pending]


class EpochClock:
    """Wraps ``zoo.consolidate._validate`` to record when each validation pass starts and ends."""

    def __init__(self, device: torch.device):
        self.device = device
        self.marks: list[tuple[float, float]] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator["EpochClock"]:
        original = zc._validate

        def timed_validate(*args: Any, **kwargs: Any) -> Any:
            sync(self.device)
            start = time.perf_counter()
            out = original(*args, **kwargs)
            sync(self.device)
            self.marks.append((start, time.perf_counter()))
            return out

        with mock.patch.object(zc, "_validate", timed_validate):
            yield self

    def epoch_seconds(self) -> list[float]:
        """Training time of every epoch after the first: end of validation e-1 to start of validation e."""
        return [self.marks[i][0] - self.marks[i - 1][1] for i in range(1, len(self.marks))]


def make_buffers(k: int, n: int, shape: tuple[int, ...], dim: int, device: torch.device,
                 generator: torch.Generator) -> list[Buffer]:
    """K buffers of ``n`` random samples, task k owning classes [5k, 5k+5), with random stored features."""
    out = []
    for t in range(k):
        classes = torch.arange(CLASSES_PER_TASK * t, CLASSES_PER_TASK * (t + 1))
        y = classes[torch.randint(0, CLASSES_PER_TASK, (n,), generator=generator)]
        x = torch.randn((n, *shape), generator=generator)
        feats = torch.randn((n, dim), generator=generator)
        out.append(Buffer(x, y, feats, classes, t).to(device))
    return out


def build_models(arch: str, k: int, num_classes: int, device: torch.device,
                 seed: int) -> tuple[nn.Module, list[nn.Module]]:
    shape, kwargs = ARCHS[arch]
    torch.manual_seed(seed)
    student = prepare_model(create_model(arch, num_classes, **kwargs), device)
    experts = [prepare_model(create_model(arch, num_classes, **kwargs), device).eval() for _ in range(k)]
    return student, experts


def run_consolidate(student0: nn.Module, experts: list[nn.Module], buffers: list[Buffer], num_classes: int,
                    cfg: zc.ConsolidationConfig, device: torch.device, looped: bool) -> tuple[list[float], list[float]]:
    """One real ``consolidate()`` call with the live teacher, batched or looped (``teacher_batching``), each
    wrapped to time its calls; returns the seconds of each timed epoch and of each teacher call in them."""
    student = copy.deepcopy(student0)
    seen = sorted({int(c) for b in buffers for c in b.classes})
    epochs, teacher = EpochClock(device), TeacherClock(device)
    cfg = dataclasses.replace(cfg, teacher_batching="looped" if looped else "batched")
    with epochs.installed(), mock.patch.object(zc, "BatchedTeacher", teacher.wrap(zc.BatchedTeacher)), \
            mock.patch.object(zc, "LoopedTeacher", teacher.wrap(zc.LoopedTeacher)):
        zc.consolidate(student, buffers, [], cfg, seen_classes=seen, num_classes=num_classes, experts=experts,
                       generator=torch.Generator().manual_seed(0), progress=False)
    steps = cfg.steps_per_epoch or 0
    return epochs.epoch_seconds(), teacher.seconds()[steps:]  # the first epoch is warm-up


def time_teacher(experts: list[nn.Module], x: torch.Tensor, device: torch.device, reps: int, warmup: int,
                 amp: bool) -> tuple[float, float, float]:
    """Median seconds of the batched and the looped teacher forward (interleaved), and the build time."""
    sync(device)
    t0 = time.perf_counter()
    teacher = zc.BatchedTeacher(experts)
    sync(device)
    build = time.perf_counter() - t0
    ctx = (lambda: autocast(device, True)) if amp else contextlib.nullcontext
    fns: dict[str, Callable[[], Any]] = {"batched": lambda: teacher(x),
                                         "looped": lambda: zc.looped_features(experts, x)}
    with torch.no_grad():
        a, b = fns["batched"](), fns["looped"]()
        if not torch.allclose(a.float(), b.float(), rtol=2e-2, atol=2e-2):
            diff = (a.float() - b.float()).abs().max()
            raise AssertionError(f"batched and looped features differ (max |diff| {diff:.3g})")
    times: dict[str, list[float]] = {"batched": [], "looped": []}
    for i in range(warmup + reps):
        for name in (("batched", "looped") if i % 2 == 0 else ("looped", "batched")):
            with ctx():
                sync(device)
                t = time.perf_counter()
                fns[name]()
                sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return med(times["batched"]), med(times["looped"]), build


def bench_consolidation(devices: list[torch.device], archs: list[str], ks: list[int], batch: int,
                        steps_for: dict[str, int],
                        epochs: int, rounds: int, teacher_reps: int, buffer_size: int) -> list[Table]:
    step_table = Table(
        f"Consolidation steps/s, teacher: live (real consolidate(); batch {batch} = {batch}//K per expert, "
        f"steps per epoch {', '.join(f'{s} ({d})' for d, s in steps_for.items())} x {epochs} timed epochs x "
        f"{rounds} round(s) per mode, median)",
        ["arch", "device", "K", "chunk/expert", "batched steps/s", "looped steps/s", "batched/looped",
         "teacher ms/step batched", "teacher ms/step looped", "teacher share looped", "ceiling"],
        note="teacher ms/step: the teacher call timed inside the same consolidate() runs (median); teacher share = "
             "looped teacher / looped step; ceiling = looped step / (looped step - looped teacher), the best "
             "batched/looped possible if the batched teacher took no time at all.")
    teacher_table = Table(
        "Teacher forward alone: K experts' features on their own chunks (median ms)",
        ["arch", "device", "precision", "K", "chunk/expert", "batched ms", "looped ms", "looped/batched",
         "BatchedTeacher build ms"])
    for device in devices:
        for arch in archs:
            shape, _ = ARCHS[arch]
            for k in ks:
                per = max(1, batch // k)
                num_classes = max(100, CLASSES_PER_TASK * k)
                student, experts = build_models(arch, k, num_classes, device, seed=k)
                dim = student.num_features
                buffers = make_buffers(k, buffer_size, shape, dim, device, torch.Generator().manual_seed(k))
                cfg = zc.ConsolidationConfig(epochs=1 + epochs, batch_size=batch, teacher="live", augment="auto",
                                             val_fraction=0.05, patience=None, steps_per_epoch=steps_for[device.type],
                                             amp=True)
                # teacher forward alone, fp32 as consolidate() runs it (and bf16 on CUDA)
                x = torch.randn((k, per, *shape), generator=torch.Generator().manual_seed(1)).to(device)
                tb_s = tl_s = 0.0
                for amp in ([False, True] if device.type == "cuda" else [False]):
                    tb, tl, build = time_teacher(experts, x, device, teacher_reps, 2, amp)
                    if not amp:
                        tb_s, tl_s = tb, tl
                    teacher_table.add(arch, device.type, "bf16 autocast" if amp else "fp32 (as consolidate)", k,
                                      per, f"{tb * 1e3:.2f}", f"{tl * 1e3:.2f}", f"{tl / tb:.2f}x",
                                      f"{build * 1e3:.1f}")
                # the real consolidation loop, batched and looped calls alternating
                secs: dict[bool, list[float]] = {False: [], True: []}
                tsecs: dict[bool, list[float]] = {False: [], True: []}
                for r in range(rounds):
                    for looped in ((False, True) if r % 2 == 0 else (True, False)):
                        e, t = run_consolidate(student, experts, buffers, num_classes, cfg, device, looped)
                        secs[looped] += e
                        tsecs[looped] += t
                steps = steps_for[device.type]
                b_sps, l_sps = steps / med(secs[False]), steps / med(secs[True])
                b_t, l_t = med(tsecs[False]), med(tsecs[True])
                l_step = 1 / l_sps
                ceiling = f"{l_step / (l_step - l_t):.2f}x" if l_t < l_step else "-"
                step_table.add(arch, device.type, k, per, f"{b_sps:.2f}", f"{l_sps:.2f}", f"{b_sps / l_sps:.2f}x",
                               f"{b_t * 1e3:.2f}", f"{l_t * 1e3:.2f}", f"{l_t / l_step * 100:.0f}%", ceiling)
                print(f"  {arch:8s} {device.type:4s} K={k:<3d} steps/s batched {b_sps:8.2f}  looped {l_sps:8.2f}  "
                      f"ratio {b_sps / l_sps:5.2f}x | teacher alone ms batched {tb_s * 1e3:8.2f}  looped "
                      f"{tl_s * 1e3:8.2f}   ({load_line()})", flush=True)
                del student, experts, buffers
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return [step_table, teacher_table]


# --- 2. executors --------------------------------------------------------------------------------------------

def expert_jobs(n_jobs: int, n_train: int, epochs: int, memory: int,
                seed: int = 0) -> tuple[list[dict], dict[str, bytes]]:
    """Jobs as ``BMC._regularise`` builds them: 2 classes per task, Gaussian class clusters in 64-d, a memory."""
    from zoo.parallel import tensors_to_bytes
    from zoo.schema import to_data
    from zoo.train import TrainConfig

    g = torch.Generator().manual_seed(seed)
    num_classes = 2 * n_jobs
    centres = 2.0 * torch.randn((num_classes, 64), generator=g)

    def sample(classes: list[int], n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.tensor(classes)[torch.randint(0, len(classes), (n,), generator=g)]
        return centres[y] + torch.randn((n, 64), generator=g), y

    base = create_model("mlp", num_classes, in_features=64)
    memory_x, _ = sample(list(range(num_classes)), memory)
    training = to_data(TrainConfig(epochs=epochs, batch_size=64, optimizer="adam", lr=1e-3, patience=None))
    jobs = []
    for t in range(n_jobs):
        classes = [2 * t, 2 * t + 1]
        tx, ty = sample(classes, n_train)
        vx, vy = sample(classes, max(10, n_train // 10))
        jobs.append({
            "task": {"id": t, "classes": classes},
            "data": tensors_to_bytes({"train_x": tx, "train_y": ty, "val_x": vx, "val_y": vy}),
            "model_config": base.zoo_config.to_dict(),
            "num_classes": num_classes,
            "training": training,
            "params": {"lambda_s": 1.0, "stability_on": "memory", "buffer_fraction": 0.1, "buffer_size": 2000},
            "seed": 1000 + t,
            "device": "cpu",
            "progress": False,
        })
    return jobs, {"base": tensors_to_bytes(base.state_dict()), "memory": tensors_to_bytes({"x": memory_x})}


def bench_executors(kinds: list[str], n_jobs: int, n_train: int, epochs: int, memory: int,
                    warm_maps: int) -> list[Table]:
    from zoo.methods.bmc import train_expert_job
    from zoo.parallel import ExecutorOptions, make_executor

    jobs, shared = expert_jobs(n_jobs, n_train, epochs, memory)
    table = Table(
        f"Executors: {n_jobs} real BMC expert jobs on the CPU (zoo.methods.bmc.train_expert_job; mlp 64-256-256, "
        f"{n_train} train samples, {epochs} epochs, stability loss on {memory} memory samples), wall seconds",
        ["executor", "workers", "threads/job", "cold s (make + 1st map)", "startup s",
         f"warm s (median of {warm_maps} maps)", "warm speed-up vs local", "s per job (in driver)",
         "val acc (mean)"],
        note="cold = making the executor + the first map (ray: starting a local Ray and its workers; process: "
             "spawning the pool); startup = Ray's own start as RayExecutor measures it; warm = a later map on the "
             "same executor; s per job = the local warm map / jobs.")
    rows: list[tuple[str, str, str, float, float | None, float, float]] = []
    for kind in kinds:
        options = ExecutorOptions(num_cpus=1.0)
        t0 = time.perf_counter()
        try:
            executor = make_executor(kind, options)  # type: ignore[arg-type]
        except Exception as exc:  # e.g. Ray not installed
            print(f"  {kind:8s} unavailable: {exc}", flush=True)
            continue
        warms: list[float] = []
        try:
            results = executor.map(train_expert_job, jobs, shared, progress=False)
            cold = time.perf_counter() - t0
            for _ in range(warm_maps):
                t1 = time.perf_counter()
                results += executor.map(train_expert_job, jobs, shared, progress=False)
                warms.append(time.perf_counter() - t1)
        finally:
            executor.close()
        if kind == "local":
            workers, threads = "1 (in-process)", str(torch.get_num_threads())
        elif kind == "process":
            workers, threads = f"{getattr(executor, '_workers', '?')} processes", "1"
        else:
            workers, threads = f"tasks of {options.num_cpus:g} CPU", "1"
        startup = getattr(executor, "startup_seconds", None)
        acc = statistics.mean(r["info"]["val_accuracy"] for r in results)
        rows.append((kind, workers, threads, cold, startup, med(warms), acc))
        print(f"  {kind:8s} cold {cold:6.2f} s  warm {' '.join(f'{w:.2f}' for w in warms)} s   ({load_line()})",
              flush=True)
    local = next((r[5] for r in rows if r[0] == "local"), None)
    for kind, workers, threads, cold, startup, warm, acc in rows:
        table.add(kind, workers, threads, f"{cold:.2f}", f"{startup:.2f}" if startup is not None else "-",
                  f"{warm:.2f}", f"{local / warm:.2f}x" if local else "-",
                  f"{warm / n_jobs:.2f}" if kind == "local" else "-", f"{acc:.3f}")
    return [table]


# --- main ----------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fast smoke run (fewer steps, epochs, repetitions)")
    ap.add_argument("--markdown", action="store_true", help="also print the tables as markdown")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto: the CPU, and CUDA too when available (default)")
    ap.add_argument("--archs", default="resnet32,mlp", help="comma-separated architectures (resnet32, mlp)")
    ap.add_argument("--ks", default="1,4,16", help="comma-separated numbers of experts K")
    ap.add_argument("--batch", type=int, default=64, help="consolidation batch size, split over the K experts")
    ap.add_argument("--steps", type=int, default=None, help="steps per epoch on the CPU (default 4; quick 2)")
    ap.add_argument("--cuda-steps", type=int, default=None, help="steps per epoch on CUDA (default 25; quick 10)")
    ap.add_argument("--epochs", type=int, default=None, help="timed epochs per call after one warm-up epoch "
                                                              "(default 2; quick 1)")
    ap.add_argument("--rounds", type=int, default=None, help="batched+looped call pairs (default 3; quick 1)")
    ap.add_argument("--teacher-reps", type=int, default=None, help="teacher-alone repetitions (default 11; quick 3)")
    ap.add_argument("--executors", default="local,process,ray", help="comma-separated executors to time")
    ap.add_argument("--jobs", type=int, default=4, help="expert jobs per map (default 4)")
    ap.add_argument("--warm-maps", type=int, default=None, help="warm maps per executor (default 3; quick 1)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of this process (default: torch's own choice); process and Ray workers "
                         "always run 1 thread per job")
    ap.add_argument("--skip", choices=["consolidation", "executors"], action="append", default=[],
                    help="skip a part")
    args = ap.parse_args(argv)
    q = args.quick
    steps_for = {"cpu": args.steps or (2 if q else 4), "cuda": args.cuda_steps or (10 if q else 25)}
    epochs = args.epochs or (1 if q else 2)
    rounds = args.rounds or (1 if q else 3)
    teacher_reps = args.teacher_reps or (3 if q else 11)
    if args.device == "auto":
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    else:
        devices = [torch.device(args.device)]
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    for a in archs:
        if a not in ARCHS:
            ap.error(f"unknown architecture {a!r}; choose from {', '.join(ARCHS)}")
    ks = [int(k) for k in args.ks.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)

    machine = machine_line()
    print(f"machine: {machine}\n{load_line()} at start\n", flush=True)
    started = time.perf_counter()
    tables: list[Table] = []
    if "consolidation" not in args.skip:
        print(f"[1-2] consolidation steps/s and teacher forward: {', '.join(archs)}; K = {ks}; "
              f"{', '.join(d.type for d in devices)}", flush=True)
        steps_for = {d.type: steps_for[d.type] for d in devices}
        for t in bench_consolidation(devices, archs, ks, args.batch, steps_for, epochs, rounds, teacher_reps,
                                     buffer_size=120 if q else 200):
            print("\n" + t.text() + "\n", flush=True)
            tables.append(t)
    if "executors" not in args.skip:
        print(f"[3] executors: {args.executors}, {args.jobs} expert jobs", flush=True)
        kinds = [k.strip() for k in args.executors.split(",") if k.strip()]
        n_train, ep = (1000, 2) if q else (8000, 12)
        warm_maps = args.warm_maps or (1 if q else 3)
        for t in bench_executors(kinds, args.jobs, n_train, ep, memory=500, warm_maps=warm_maps):
            print("\n" + t.text() + "\n", flush=True)
            tables.append(t)
    print(f"total time {time.perf_counter() - started:.0f} s ({load_line()} at end)")
    if args.markdown:
        print_markdown(machine, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
