"""Executors: run independent expert-training jobs (one per expert) in parallel.

An :class:`Executor` maps a module-level job function over a list of jobs and returns the results in job
order, whatever order they finish in. Three implementations share one contract:

* :class:`LocalExecutor` (``local``, the default): in-process and sequential; a laptop.
* :class:`ProcessExecutor` (``process``): a ``spawn`` process pool on one machine (``fork`` is unsafe once
  torch has started threads or CUDA).
* :class:`RayExecutor` (``ray``, ``pip install 'expert-zoo[ray]'``): one Ray core task per job, with CPUs and GPUs
  requested per task, Ray's own retries for dead workers, and the shared data put in the object store once.
  A Ray started here listens on 127.0.0.1 only; ``ray_address`` joins an existing cluster instead.

Jobs and results are plain dicts (strings, numbers, lists, dicts, bytes). Tensors travel as safetensors bytes
(:func:`tensors_to_bytes` / :func:`bytes_to_tensors`), never as pickled tensors: the bytes are the same on
every executor, cost one copy, and load on any device. ``shared`` (e.g. the base model checkpoint) is sent
once per ``map`` rather than once per job where the executor allows it (Ray).

A job that raises :class:`TransientError` (a lost worker, OOM on a shared GPU, flaky I/O; CUDA out-of-memory
counts too) is retried up to ``max_retries`` times; any other exception fails the ``map`` at once with one
:class:`JobError` line naming the job and the exception.

The driver alone writes the registry: executors and the jobs they run never touch it. Jobs return weights
and facts; the caller stores them, so a retried or abandoned job can never leave half an expert behind.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import logging
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

from registry.errors import ZooError

if TYPE_CHECKING:
    import torch

__all__ = [
    "Executor",
    "ExecutorOptions",
    "JobError",
    "LocalExecutor",
    "PayloadError",
    "ProcessExecutor",
    "RayExecutor",
    "TransientError",
    "bytes_to_tensors",
    "make_executor",
    "tensors_to_bytes",
]

JobFn = Callable[[dict, dict[str, bytes]], dict]
_E = TypeVar("_E", bound="_ExecutorBase")

_MAX_MESSAGE = 400  # one readable line, even when an exception carries a whole traceback in its text


class TransientError(ZooError):
    """A failure worth retrying (lost worker, OOM on a shared GPU, flaky I/O)."""


class JobError(ZooError):
    """A job failed for good: a non-retryable exception, retries exhausted, or its worker died."""

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index


class PayloadError(ZooError, ValueError):
    """Tensors cannot be packed as safetensors bytes, or bytes are not a safetensors payload."""


class _JobFailed(ZooError):
    """Worker-side carrier of a non-retryable failure: one picklable line, whatever the original exception."""


@dataclass
class ExecutorOptions:
    """How an executor runs jobs: retries, resources per job, pool size, and which Ray cluster to use."""

    max_retries: int = 2  # retries per job on TransientError (and, for Ray, on worker death)
    num_gpus: float = 0.0  # per job (Ray: resource request; process: round-robin GPUs when CUDA is present)
    num_cpus: float = 1.0  # per job (process: torch threads per worker; Ray: resource request)
    max_workers: int | None = None  # process pool size (default: min(jobs, cpu count / num_cpus))
    ray_address: str | None = None  # join an existing cluster ("auto" or "ray://host:port"); None starts local Ray
    runtime_env: Mapping[str, Any] | None = None  # extra Ray runtime_env entries, merged over zoo's

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ZooError(f"max_retries must be a non-negative integer, got {self.max_retries!r}")
        if not isinstance(self.num_gpus, (int, float)) or self.num_gpus < 0:
            raise ZooError(f"num_gpus must be a non-negative number, got {self.num_gpus!r}")
        if not isinstance(self.num_cpus, (int, float)) or self.num_cpus <= 0:
            raise ZooError(f"num_cpus must be a positive number, got {self.num_cpus!r}")
        if self.max_workers is not None and (
            isinstance(self.max_workers, bool) or not isinstance(self.max_workers, int) or self.max_workers < 1
        ):
            raise ZooError(f"max_workers must be a positive integer, got {self.max_workers!r}")


@runtime_checkable
class Executor(Protocol):
    """Runs ``fn(job, shared)`` for every job and returns the results in job order."""

    name: str

    def map(self, fn: JobFn, jobs: Sequence[dict], shared: Mapping[str, bytes] | None = None, *,
            desc: str = "experts", progress: bool = True) -> list[dict]:
        """Run every job; ``fn`` must be a module-level function so that worker processes can import it."""
        ...

    def close(self) -> None:
        """Release workers (and a Ray this executor started); the executor is not used afterwards."""
        ...


# --- tensors as bytes ---------------------------------------------------------------------------------------

def tensors_to_bytes(tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Pack named tensors as one safetensors payload (contiguous CPU copies; views and GPU tensors are fine).

    Fresh copies matter: safetensors refuses tensors that share storage (tied weights, slices of one buffer),
    and a copy also detaches the payload from whatever the caller does to the tensors next.
    """
    import torch
    from safetensors.torch import save

    packed: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if not isinstance(key, str):
            raise PayloadError(f"tensor names must be strings, got {key!r}")
        if not isinstance(value, torch.Tensor):
            raise PayloadError(f"{key!r} is a {type(value).__name__}, not a torch.Tensor")
        packed[key] = value.detach().to("cpu", copy=True).contiguous()
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise PayloadError("safetensors metadata must map strings to strings")
    return save(packed, metadata=metadata)


def bytes_to_tensors(data: bytes) -> dict[str, torch.Tensor]:
    """Unpack a safetensors payload made by :func:`tensors_to_bytes` into CPU tensors."""
    from safetensors.torch import load

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PayloadError(f"a safetensors payload must be bytes, got {type(data).__name__}")
    try:
        return load(bytes(data))
    except Exception as exc:  # safetensors raises its own error types (and Rust panics) for corrupt headers
        raise PayloadError(f"not a safetensors payload ({len(data)} bytes): {_one_line(str(exc))}") from None


# --- what every executor shares -----------------------------------------------------------------------------

def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _describe(exc: BaseException) -> str:
    message = _one_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _job_label(job: Mapping[str, Any], index: int) -> str:
    """``job #2 (flaky)``: the position always, plus the job's own name (or task id) when it has one."""
    name = job.get("name")
    if name in (None, ""):
        name = None
        task = job.get("task")
        if isinstance(task, Mapping) and task.get("id") is not None:
            name = f"task {task['id']}"
        elif isinstance(task, (str, int)) and not isinstance(task, bool):
            name = f"task {task}"
    return f"job #{index} ({_one_line(str(name))})" if name is not None else f"job #{index}"


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError):
        return True
    torch = sys.modules.get("torch")  # only a job that imported torch can run out of GPU memory
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    return oom is not None and isinstance(exc, oom)


def _find_tensor(value: Any, path: str) -> str | None:
    """Where a torch.Tensor hides in a job or result (``result['state']``), or None."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return path
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _find_tensor(item, f"{path}[{key!r}]")
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _find_tensor(item, f"{path}[{i}]")
            if found:
                return found
    return None


def _check_call(fn: Any, jobs: Sequence[Any], shared: Mapping[str, bytes] | None) -> dict[str, bytes]:
    """Refuse, before anything runs, what would only fail later inside a worker (or differ between executors)."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    qualname = getattr(target, "__qualname__", None)
    if not callable(fn) or not qualname or not getattr(target, "__module__", None):
        raise ZooError(f"the job function must be a module-level function, got {fn!r}")
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise ZooError(f"the job function must be a module-level function that workers can import, "
                       f"got {target.__module__}.{qualname}")
    for i, job in enumerate(jobs):
        if not isinstance(job, Mapping):
            raise ZooError(f"job #{i} is a {type(job).__name__}, not a dict")
        found = _find_tensor(job, "job")
        if found:
            raise ZooError(f"{_job_label(job, i)} has a torch.Tensor at {found}; send tensors as safetensors "
                           f"bytes (zoo.parallel.tensors_to_bytes)")
    out: dict[str, bytes] = {}
    for key, value in (shared or {}).items():
        if not isinstance(value, (bytes, bytearray)):
            raise ZooError(f"shared[{key!r}] is a {type(value).__name__}, not bytes; send tensors as "
                           f"safetensors bytes (zoo.parallel.tensors_to_bytes)")
        out[key] = bytes(value)
    return out


def _run_job(fn: JobFn, job: dict, shared: dict[str, bytes]) -> dict:
    """One attempt of one job, in whichever process runs it; failures leave as one picklable line.

    Every executor goes through here, so a job behaves the same in-process, in a pool and on Ray: a retryable
    failure becomes a plain TransientError (what Ray's ``retry_exceptions`` matches), anything else a
    ``_JobFailed``; neither drags an unpicklable original exception across a process boundary.
    """
    try:
        result = fn(job, shared)
    except Exception as exc:
        if _is_transient(exc):
            raise TransientError(_describe(exc)) from exc
        raise _JobFailed(_describe(exc)) from exc
    if not isinstance(result, Mapping):
        raise _JobFailed(f"the job function returned a {type(result).__name__}, not a dict")
    found = _find_tensor(result, "result")
    if found:
        raise _JobFailed(f"the job function returned a torch.Tensor at {found}; return tensors as "
                         f"safetensors bytes (zoo.parallel.tensors_to_bytes)")
    return dict(result)


def _failure(label: str, exc: BaseException, attempts: int, index: int) -> JobError:
    if isinstance(exc, TransientError):
        tries = f"{attempts} attempt" + ("s" if attempts != 1 else "")
        return JobError(f"{label} failed after {tries}: {exc}", index)
    if isinstance(exc, _JobFailed):
        return JobError(f"{label} failed: {exc}", index)
    return JobError(f"{label} failed: {_describe(exc)}", index)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    # disable=None hides the bar when stderr is not a terminal (logs, CI)
    return tqdm(total=total, desc=desc, unit="job", file=sys.stderr, leave=False, disable=None if enabled else True)


class _ExecutorBase:
    """Context-manager support shared by the executors."""

    def close(self) -> None:  # pragma: no cover - overridden
        """Release resources."""

    def __enter__(self: _E) -> _E:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- in-process ---------------------------------------------------------------------------------------------

class LocalExecutor(_ExecutorBase):
    """Runs jobs one after another in this process (the default: a laptop, a debugger, a single GPU)."""

    name = "local"

    def __init__(self, options: ExecutorOptions | None = None):
        self.options = options or ExecutorOptions()

    def map(self, fn: JobFn, jobs: Sequence[dict], shared: Mapping[str, bytes] | None = None, *,
            desc: str = "experts", progress: bool = True) -> list[dict]:
        """Run every job in turn, retrying TransientError up to ``max_retries`` times; results in job order."""
        shared_data = _check_call(fn, jobs, shared)
        results: list[dict] = []
        with _progress(len(jobs), desc, progress) as bar:
            for index, job in enumerate(jobs):
                label = _job_label(job, index)
                attempts = 0
                while True:
                    attempts += 1
                    try:
                        # copies, so that a job mutating its inputs behaves as it would in a worker process
                        results.append(_run_job(fn, dict(job), dict(shared_data)))
                        break
                    except TransientError as exc:
                        if attempts > self.options.max_retries:
                            raise _failure(label, exc, attempts, index) from exc.__cause__
                    except _JobFailed as exc:
                        raise _failure(label, exc, attempts, index) from exc.__cause__
                bar.update(1)
        return results

    def close(self) -> None:
        """Nothing to release."""


# --- a process pool -----------------------------------------------------------------------------------------

# Per worker process: which slot of the driver's shared array it reports its running job in.
_WORKER_SLOT: int | None = None
_WORKER_ACTIVE: Any = None


def _process_worker_init(active: Any, counter: Any, threads: int, gpus: list[str] | None) -> None:
    """Set up one pool worker: claim a slot, pin its torch threads, and (with GPUs) pick its device."""
    global _WORKER_SLOT, _WORKER_ACTIVE
    with counter.get_lock():
        _WORKER_SLOT = counter.value % len(active)
        counter.value += 1
    _WORKER_ACTIVE = active
    if gpus:
        # Before torch initialises CUDA in this process, so "cuda" in the job means this worker's GPU.
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[_WORKER_SLOT % len(gpus)]
    # Workers share the machine: without this each would start one thread per core and they would thrash.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _process_job(fn: JobFn, job: dict, shared: dict[str, bytes], index: int) -> dict:
    """Pool-side entry point: record the running job (so a crash can be pinned on it), then run it."""
    if _WORKER_ACTIVE is not None and _WORKER_SLOT is not None:
        _WORKER_ACTIVE[_WORKER_SLOT] = index
    try:
        return _run_job(fn, job, shared)
    finally:
        if _WORKER_ACTIVE is not None and _WORKER_SLOT is not None:
            _WORKER_ACTIVE[_WORKER_SLOT] = -1


def _cpu_count() -> int:
    from .threads import usable_cores

    return usable_cores()  # what this process may use (affinity, cgroup quota), not the host's


class ProcessExecutor(_ExecutorBase):
    """Runs jobs concurrently in a ``spawn`` process pool on this machine; TransientError is resubmitted.

    The pool starts on the first ``map`` (sized ``max_workers``, else ``min(jobs, cpus / num_cpus)``) and is
    reused afterwards (grown when a later map could use more workers). Each worker runs ``num_cpus`` torch
    threads and, when jobs ask for GPUs and CUDA is present, sees one GPU (dealt round-robin). ``shared``
    travels with each job (pickled bytes: one memory copy per job). A worker that dies (killed, out of memory,
    a native crash) breaks the pool: the ``map`` fails with a JobError naming the job(s) that were running, and
    the next ``map`` starts a fresh pool.
    """

    name = "process"

    def __init__(self, options: ExecutorOptions | None = None):
        self.options = options or ExecutorOptions()
        self._pool: cf.ProcessPoolExecutor | None = None
        self._active: Any = None
        self._workers = 0

    def _ensure_pool(self, jobs: int) -> cf.ProcessPoolExecutor:
        threads = max(1, int(self.options.num_cpus))
        workers = self.options.max_workers or max(1, min(jobs, _cpu_count() // threads))
        if self._pool is not None and workers > self._workers:
            self.close()  # sized for an earlier, smaller map: grow rather than leave CPUs idle
        if self._pool is None:
            ctx = mp.get_context("spawn")
            self._workers = workers
            self._active = ctx.Array("i", [-1] * workers)
            self._pool = cf.ProcessPoolExecutor(
                max_workers=workers, mp_context=ctx, initializer=_process_worker_init,
                initargs=(self._active, ctx.Value("i", 0), threads, self._gpus()))
        return self._pool

    def _gpus(self) -> list[str] | None:
        """GPUs to deal out to workers round-robin, when jobs asked for GPUs and CUDA is present."""
        if self.options.num_gpus <= 0:
            return None
        import torch

        if not torch.cuda.is_available():
            return None
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:
            return [d.strip() for d in visible.split(",") if d.strip()]
        return [str(i) for i in range(torch.cuda.device_count())]

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool, self._active = None, None

    def map(self, fn: JobFn, jobs: Sequence[dict], shared: Mapping[str, bytes] | None = None, *,
            desc: str = "experts", progress: bool = True) -> list[dict]:
        """Run the jobs in the pool, resubmitting TransientError up to ``max_retries`` times; results in job order."""
        shared_data = _check_call(fn, jobs, shared)
        if not jobs:
            return []
        pool = self._ensure_pool(len(jobs))
        results: list[dict | None] = [None] * len(jobs)
        attempts = [0] * len(jobs)
        running: dict[cf.Future, int] = {}

        def submit(index: int) -> None:
            attempts[index] += 1
            running[pool.submit(_process_job, fn, jobs[index], shared_data, index)] = index

        try:
            with _progress(len(jobs), desc, progress) as bar:
                for index in range(len(jobs)):
                    submit(index)
                while running:
                    done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
                    for future in done:
                        index = running.pop(future)
                        label = _job_label(jobs[index], index)
                        try:
                            results[index] = future.result()
                        except TransientError as exc:
                            if attempts[index] > self.options.max_retries:
                                raise _failure(label, exc, attempts[index], index) from None
                            try:
                                submit(index)
                            except BrokenProcessPool:  # another worker died while this one was failing
                                raise self._crash(jobs, index) from None
                            continue
                        except BrokenProcessPool:
                            raise self._crash(jobs, index) from None
                        except Exception as exc:  # _JobFailed, or a job that could not be pickled to a worker
                            raise _failure(label, exc, attempts[index], index) from None
                        bar.update(1)
        finally:
            for future in running:  # a failed map abandons the rest; queued jobs never start
                future.cancel()
        return results  # type: ignore[return-value]

    def _crash(self, jobs: Sequence[dict], index: int) -> JobError:
        """Name the job(s) that were running when a worker died, then drop the broken pool."""
        busy = sorted({i for i in self._active[:] if 0 <= i < len(jobs)}) if self._active is not None else []
        self._discard_pool()
        names = " or ".join(_job_label(jobs[i], i) for i in busy) if busy else _job_label(jobs[index], index)
        return JobError(f"{names} failed: its worker process died abruptly (killed, out of memory, or a native "
                        f"crash); the next map starts a fresh pool", busy[0] if len(busy) == 1 else index)

    def close(self) -> None:
        """Stop the worker processes (queued jobs are cancelled; running ones finish first)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool, self._active = None, None


# --- Ray ----------------------------------------------------------------------------------------------------

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ZooError("the ray executor needs Ray: pip install 'expert-zoo[ray]'") from None
    return ray


def _ray_job(fn: JobFn, job: dict, shared: dict[str, bytes]) -> dict:
    """Ray task body (``shared`` arrives resolved from the one object-store copy that every task references)."""
    return _run_job(fn, job, shared)


def _code_roots() -> list[str]:
    """Directories a worker needs on its path: where ``zoo``/``registry`` live, the cwd, and the caller's path."""
    roots = [str(Path(__file__).resolve().parent.parent), os.getcwd()]
    roots += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return list(dict.fromkeys(roots))


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """Make a Ray started inside this block use 127.0.0.1 for every listener, then put things back.

    ``_node_ip_address="127.0.0.1"`` alone is not enough on Linux: Ray "resolves" a loopback node address to
    the machine's network address, and its gRPC servers then bind every interface. With cluster mode off (what
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 means; the default on macOS/Windows) the node address stays loopback
    and every listener follows it. Ray reads that switch when it is imported, so the module constant is set
    too; both are restored because a driver joining a real cluster later must advertise a reachable address.
    """
    import ray._private.ray_constants as constants

    env_name = getattr(constants, "ENABLE_RAY_CLUSTERS_ENV_VAR", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    saved_env = os.environ.get(env_name)
    had_const = hasattr(constants, "ENABLE_RAY_CLUSTER")
    saved_const = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[env_name] = "0"  # for the Ray processes started now
    if had_const:
        constants.ENABLE_RAY_CLUSTER = False  # for this (already imported) driver
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop(env_name, None)
        else:
            os.environ[env_name] = saved_env
        if had_const:
            constants.ENABLE_RAY_CLUSTER = saved_const


class RayExecutor(_ExecutorBase):
    """Runs each job as a Ray core task: resources per task, Ray retries on worker death and TransientError.

    Uses the Ray this process is already connected to, if any (and leaves it running on close); otherwise joins
    ``ray_address``, or starts a local Ray that listens on 127.0.0.1 only (no dashboard, no usage stats, worker
    logs not forwarded) and shuts it down on close. ``local_cpus`` sizes a local Ray (default: this machine's);
    ``startup_seconds`` is how long starting or joining Ray took (0 when it was already running).
    """

    name = "ray"

    def __init__(self, options: ExecutorOptions | None = None, *, local_cpus: int | None = None):
        self.options = options or ExecutorOptions()
        self._ray = _import_ray()
        self._owns_ray = False
        self.startup_seconds = 0.0
        if not self._ray.is_initialized():
            import time

            start = time.perf_counter()
            self._start(local_cpus)
            self.startup_seconds = time.perf_counter() - start
            self._owns_ray = True
        self._task = self._ray.remote(_ray_job)

    def _runtime_env(self, local: bool) -> dict[str, Any]:
        if local:
            # Local workers share this file system: a path is enough (no upload) for zoo, registry and the
            # caller's own modules (e.g. a job function in tests/ or a script's package).
            env: dict[str, Any] = {"env_vars": {"PYTHONPATH": os.pathsep.join(_code_roots())}}
        else:
            # Remote nodes cannot see this machine's paths: ship zoo and registry as modules.
            import registry
            import zoo

            env = {"py_modules": [str(Path(zoo.__file__).parent), str(Path(registry.__file__).parent)]}
        for key, value in (self.options.runtime_env or {}).items():
            if key == "env_vars" and "env_vars" in env:
                env["env_vars"] = {**env["env_vars"], **value}
            else:
                env[key] = value
        return env

    def _start(self, local_cpus: int | None) -> None:
        ray = self._ray
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # read when Ray starts; no usage report leaves the machine
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        if self.options.ray_address:
            try:
                ray.init(address=self.options.ray_address, runtime_env=self._runtime_env(False), **quiet)
            except Exception as exc:
                raise ZooError(f"cannot join the Ray cluster at {self.options.ray_address}: {_describe(exc)}") from exc
            return
        with _loopback_node():
            context = ray.init(num_cpus=local_cpus or _cpu_count(), include_dashboard=False,
                               dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1",
                               runtime_env=self._runtime_env(True), **quiet)
        info = getattr(context, "address_info", {}) or {}
        host = str(info.get("node_ip_address", ""))
        gcs = str(info.get("gcs_address", ""))
        if host not in _LOOPBACK or not gcs.startswith(("127.0.0.1:", "[::1]:", "localhost:")):
            ray.shutdown()
            raise ZooError(f"local Ray came up on {host or '?'} (GCS {gcs or '?'}), not loopback; refusing to use it")

    def _put(self, shared: dict[str, bytes]) -> Any:
        """Store ``shared`` in the object store once; every task of the map gets a reference to this copy."""
        return self._ray.put(shared)

    def _submit(self, fn: JobFn, job: dict, shared_ref: Any, name: str) -> Any:
        """Launch one job as a Ray task and return its ObjectRef."""
        return self._task.options(
            name=name, num_cpus=self.options.num_cpus, num_gpus=self.options.num_gpus,
            max_retries=self.options.max_retries, retry_exceptions=[TransientError],
        ).remote(fn, job, shared_ref)

    def map(self, fn: JobFn, jobs: Sequence[dict], shared: Mapping[str, bytes] | None = None, *,
            desc: str = "experts", progress: bool = True) -> list[dict]:
        """Run one Ray task per job (Ray retries TransientError and dead workers); results in job order."""
        ray = self._ray
        shared_data = _check_call(fn, jobs, shared)
        if not jobs:
            return []
        shared_ref = self._put(shared_data)
        refs = {self._submit(fn, dict(job), shared_ref, f"{desc}: {_job_label(job, i)}"): i
                for i, job in enumerate(jobs)}
        results: list[dict | None] = [None] * len(jobs)
        pending = list(refs)
        try:
            with _progress(len(jobs), desc, progress) as bar:
                while pending:
                    ready, pending = ray.wait(pending, num_returns=1)
                    for ref in ready:
                        index = refs[ref]
                        try:
                            results[index] = ray.get(ref)
                        except Exception as exc:
                            raise self._error(jobs, index, exc) from None
                        bar.update(1)
        finally:
            for ref in pending:  # a failed map abandons the rest
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
        return results  # type: ignore[return-value]

    def _error(self, jobs: Sequence[dict], index: int, exc: BaseException) -> JobError:
        exceptions = self._ray.exceptions
        label = _job_label(jobs[index], index)
        attempts = self.options.max_retries + 1
        cause = getattr(exc, "cause", None) if isinstance(exc, exceptions.RayTaskError) else None
        if cause is not None:
            return _failure(label, cause, attempts, index)
        if isinstance(exc, exceptions.WorkerCrashedError):
            return JobError(f"{label} failed: its Ray worker died {attempts} time(s) (killed, out of memory, or a "
                            f"native crash)", index)
        if isinstance(exc, getattr(exceptions, "OutOfMemoryError", ())):
            return JobError(f"{label} failed: Ray killed its worker for using too much memory", index)
        return JobError(f"{label} failed: {_describe(exc)}", index)

    def close(self) -> None:
        """Shut down the Ray this executor started; leave a Ray the caller started (or joined) alone."""
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns_ray = False


def make_executor(kind: Literal["local", "process", "ray"], options: ExecutorOptions | None = None) -> Executor:
    """The executor called ``kind`` (``local``, ``process`` or ``ray``) with ``options``."""
    kinds: dict[str, Callable[[ExecutorOptions | None], Executor]] = {
        "local": LocalExecutor, "process": ProcessExecutor, "ray": RayExecutor}
    if kind not in kinds:
        raise ZooError(f"unknown executor {kind!r}; choose local, process or ray")
    return kinds[kind](options)
