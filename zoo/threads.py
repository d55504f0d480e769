"""How many CPU threads torch uses, chosen once from the cores this process may use and how busy they are.

torch's default is one intra-op thread per core of the machine, spinning between parallel regions. On a
shared machine that is the worst choice: when another job holds a core, every parallel region waits for the
thread that lost its core, and the spinning threads take time from the job that has it (the demo ran 9x
slower that way). zoo therefore

* counts the cores this process may use: its CPU affinity, capped by a cgroup CPU quota (containers);
* subtracts the cores other jobs keep busy (measured over 0.2 s from /proc/stat when the work starts, at
  most all but one), and takes one thread per remaining core;
* uses one thread for small work (a model under :data:`SMALL_MODEL_PARAMS` parameters), where parallel
  regions are too short to pay for their synchronisation;
* asks OpenMP to sleep rather than spin while waiting (``OMP_WAIT_POLICY=PASSIVE``), set by ``import zoo``
  before torch is imported (OpenMP reads it once, when torch loads it).

``ZOO_THREADS=N`` (or ``zoo --threads N``) forces N threads; ``ZOO_THREADS=torch`` in the environment
leaves torch's defaults alone, the wait policy too (``zoo --threads torch`` keeps torch's thread count, but
comes after ``import zoo`` has set the wait policy). Executors divide the cores among their workers (``zoo.parallel``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

SMALL_MODEL_PARAMS = 1_000_000
ENV = "ZOO_THREADS"

_configured: int | None = None


def set_wait_policy() -> None:
    """Ask OpenMP to sleep while waiting, unless the user chose otherwise (or ``ZOO_THREADS=torch``).
    Effective only before torch is first imported."""
    if os.environ.get(ENV, "").strip().lower() != "torch":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _cgroup_quota() -> float | None:
    """Cores a cgroup CPU quota allows (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None without one."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def _affinity() -> set[int]:
    """The CPUs this process may run on (all of them where the platform has no affinity masks)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return set(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    cores = len(_affinity())
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cpu_times(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) jiffies summed over the CPUs ``cpus`` from /proc/stat's per-CPU lines, or None."""
    busy = total = 0
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            name, *values = line.split()
            if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
                continue
            fields = [int(v) for v in values[:8]]
            idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
            busy += sum(fields) - idle
            total += sum(fields)
    except (OSError, ValueError, IndexError):
        return None
    return (busy, total) if total else None


def busy_cores(window: float = 0.2) -> float:
    """Cores other jobs keep busy now, among the CPUs this process may use: their busy share over
    ``window`` seconds while this process sleeps, times their number (the load average lags a minute behind
    a job that just started, and counts the whole host); the 1-minute load average where /proc/stat is
    missing."""
    import time

    cpus = _affinity()
    before = _cpu_times(cpus)
    if before is not None:
        time.sleep(window)
        after = _cpu_times(cpus)
        if after is not None and after[1] > before[1]:
            return (after[0] - before[0]) / (after[1] - before[1]) * len(cpus)
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def choose_threads(requested: int | str | None = None, model_params: int | None = None) -> int | None:
    """The intra-op thread count to use: ``requested`` (an int, ``"auto"``, ``"torch"``), else
    ``$ZOO_THREADS``, else auto: one per idle usable core (one for a small model). None means "leave torch's
    default" (``torch``)."""
    value = requested if requested is not None else os.environ.get(ENV, "auto")
    text = str(value).strip().lower()
    if text == "torch":
        return None
    if text != "auto":
        try:
            n = int(text)
        except ValueError:
            from registry.errors import ZooError

            raise ZooError(f"threads: expected a number of threads, 'auto' or 'torch', got {value!r}") from None
        if n < 1:
            from registry.errors import ZooError

            raise ZooError(f"threads: must be at least 1, got {n}")
        return n
    if model_params is not None and model_params < SMALL_MODEL_PARAMS:
        return 1
    cores = usable_cores()
    return max(1, cores - round(min(busy_cores(), cores - 1)))


def configure_threads(requested: int | str | None = None, model_params: int | None = None) -> int | None:
    """Set torch's intra-op threads (and ``OMP_NUM_THREADS`` for child processes) as :func:`choose_threads`
    says; returns the count (None: torch's default kept)."""
    global _configured
    n = choose_threads(requested, model_params)
    if n is None:
        return None
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    _configured = n
    return n
