"""Executors (zoo.parallel): local, process pool and Ray run the same jobs to the same results, in job order.

Ray starts once for the whole session (loopback only, 2 CPUs) and is shut down at the end; the Ray tests skip
only when ``import ray`` fails. Job functions live in tests/parallel_jobs.py so that workers can import them.
"""

from __future__ import annotations

import sys

import pytest
import torch

from registry.errors import ZooError
from tests import parallel_jobs as jobs_mod
from zoo.parallel import (Executor, ExecutorOptions, JobError, LocalExecutor, PayloadError, ProcessExecutor,
                          RayExecutor, bytes_to_tensors, make_executor, tensors_to_bytes)

try:
    import ray
except ImportError:  # the extra is optional: zoo[ray]
    ray = None

requires_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed (pip install 'expert-zoo[ray]')")

KINDS = ["local", "process", pytest.param("ray", marks=requires_ray)]


@pytest.fixture(scope="module")
def process_executor():
    executor = ProcessExecutor(ExecutorOptions(max_workers=2))
    yield executor
    executor.close()


@pytest.fixture(params=KINDS)
def executor(request) -> Executor:
    if request.param == "local":
        return LocalExecutor()
    return request.getfixturevalue(f"{request.param}_executor")


@pytest.fixture(scope="module")
def reference():
    """The jobs, the shared base, and what the local executor makes of them."""
    jobs = [jobs_mod.linear_job(i) for i in range(4)]
    shared = {"base": jobs_mod.base_state()}
    return jobs, shared, LocalExecutor().map(jobs_mod.train_linear, jobs, shared, progress=False)


# --- tensors as bytes ---------------------------------------------------------------------------------------

def test_tensor_bytes_round_trip():
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tensors = {"t": base.t(), "row": base[1], "same": base, "half": torch.ones(2, dtype=torch.float16)}
    data = tensors_to_bytes(tensors, metadata={"kind": "test"})
    assert isinstance(data, bytes)
    back = bytes_to_tensors(data)
    assert set(back) == set(tensors)
    for key, value in tensors.items():
        assert torch.equal(back[key], value) and back[key].dtype == value.dtype and back[key].is_contiguous()


def test_tensor_bytes_refuses_bad_input():
    with pytest.raises(PayloadError, match="not a torch.Tensor"):
        tensors_to_bytes({"w": [1.0, 2.0]})
    with pytest.raises(PayloadError, match="not a safetensors payload"):
        bytes_to_tensors(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(PayloadError, match="must be bytes"):
        bytes_to_tensors("text")


# --- the same results everywhere ----------------------------------------------------------------------------

def test_results_equal_across_executors_and_in_job_order(executor, reference):
    jobs, shared, expected = reference
    results = executor.map(jobs_mod.train_linear, jobs, shared, progress=False)
    assert [r["name"] for r in results] == [j["name"] for j in jobs]
    for got, want in zip(results, expected):
        got_state, want_state = bytes_to_tensors(got["state"]), bytes_to_tensors(want["state"])
        assert set(got_state) == set(want_state)
        assert all(torch.equal(got_state[k], want_state[k]) for k in want_state)
        assert got["loss"] == want["loss"]
    # each job really trained: distinct data, distinct weights
    assert not torch.equal(bytes_to_tensors(results[0]["state"])["weight"],
                           bytes_to_tensors(results[1]["state"])["weight"])


def test_process_jobs_run_in_worker_processes(process_executor, reference):
    import os

    jobs, shared, _ = reference
    results = process_executor.map(jobs_mod.train_linear, jobs, shared, progress=False)
    assert all(r["pid"] != os.getpid() for r in results)


def test_empty_job_list(process_executor):
    assert LocalExecutor().map(jobs_mod.train_linear, []) == []
    assert process_executor.map(jobs_mod.train_linear, []) == []


# --- retries and failures -----------------------------------------------------------------------------------

def test_transient_error_is_retried(executor, tmp_path):
    jobs = [{"name": f"flaky-{i}", "marker": str(tmp_path / f"marker-{i}")} for i in range(2)]
    results = executor.map(jobs_mod.flaky, jobs, progress=False)
    assert [r["name"] for r in results] == ["flaky-0", "flaky-1"] and all(r["ok"] for r in results)
    assert all((tmp_path / f"marker-{i}").exists() for i in range(2))


def test_retries_exhausted_names_the_job(executor, tmp_path):
    counter = tmp_path / "attempts"
    with pytest.raises(JobError) as info:
        executor.map(jobs_mod.always_transient, [{"name": "busy-gpu", "counter": str(counter)}], progress=False)
    message = str(info.value)
    assert "job #0 (busy-gpu)" in message and "after 3 attempts" in message
    assert "TransientError: the GPU is still busy" in message and "\n" not in message
    assert isinstance(info.value, ZooError) and info.value.index == 0
    assert counter.read_text() == "3"  # the first try plus max_retries=2


def test_non_retryable_error_is_one_line_naming_job_and_exception(executor):
    jobs = [{"name": "good"}, {"name": "bad", "bad": True}, {"name": "also-good"}]
    with pytest.raises(JobError) as info:
        executor.map(jobs_mod.maybe_fail, jobs, progress=False)
    message = str(info.value)
    assert message == "job #1 (bad) failed: ValueError: learning rate must be positive got: -0.1"
    assert isinstance(info.value, ZooError)


def test_local_executor_keeps_the_original_exception_as_cause():
    with pytest.raises(JobError) as info:
        LocalExecutor().map(jobs_mod.maybe_fail, [{"name": "bad", "bad": True}], progress=False)
    assert isinstance(info.value.__cause__, ValueError)


def test_process_worker_crash_is_a_clear_error_and_the_pool_recovers(process_executor, reference):
    with pytest.raises(JobError) as info:
        process_executor.map(jobs_mod.die, [{"name": "segfault"}], progress=False)
    message = str(info.value)
    assert message.startswith("job #0 (segfault) failed: its worker process died") and "\n" not in message
    jobs, shared, expected = reference
    again = process_executor.map(jobs_mod.train_linear, jobs[:2], shared, progress=False)
    assert [r["loss"] for r in again] == [r["loss"] for r in expected[:2]]


def test_job_task_id_names_the_job():
    with pytest.raises(JobError, match=r"^job #0 \(task 7\) failed: ValueError"):
        LocalExecutor().map(jobs_mod.maybe_fail, [{"task": {"id": 7}, "name": None, "bad": True}], progress=False)


# --- the contract is checked the same way on every executor -------------------------------------------------

def test_contract_violations_are_refused():
    local = LocalExecutor()
    with pytest.raises(ZooError, match="module-level function"):
        local.map(lambda job, shared: job, [{}])

    def nested(job, shared):
        return job

    with pytest.raises(ZooError, match="module-level function"):
        local.map(nested, [{}])
    with pytest.raises(ZooError, match=r"job #0 \(t\) has a torch.Tensor at job\['x'\]"):
        local.map(jobs_mod.maybe_fail, [{"name": "t", "x": torch.zeros(1)}])
    with pytest.raises(ZooError, match=r"shared\['base'\] is a Tensor, not bytes"):
        local.map(jobs_mod.maybe_fail, [{"name": "t"}], {"base": torch.zeros(1)})
    with pytest.raises(JobError, match=r"returned a torch.Tensor at result\['weights'\]\[0\]"):
        local.map(jobs_mod.return_tensor, [{"name": "t"}], progress=False)


def test_make_executor_and_options():
    local = make_executor("local")
    assert isinstance(local, LocalExecutor) and isinstance(local, Executor) and local.name == "local"
    with make_executor("process", ExecutorOptions(max_workers=1)) as pool:
        assert isinstance(pool, ProcessExecutor) and isinstance(pool, Executor)
    with pytest.raises(ZooError, match="unknown executor 'slurm'; choose local, process or ray"):
        make_executor("slurm")  # type: ignore[arg-type]
    with pytest.raises(ZooError, match="max_retries"):
        ExecutorOptions(max_retries=-1)
    with pytest.raises(ZooError, match="max_workers"):
        ExecutorOptions(max_workers=0)


def test_ray_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(ZooError) as info:
        make_executor("ray")
    assert str(info.value) == "the ray executor needs Ray: pip install 'expert-zoo[ray]'"


# --- Ray specifics ------------------------------------------------------------------------------------------

@requires_ray
def test_ray_puts_shared_data_once_and_tasks_get_a_reference(ray_executor, monkeypatch):
    puts, refs = [], []
    real_put, real_submit = ray.put, ray_executor._submit

    def counting_put(value, *args, **kwargs):
        puts.append(value)
        return real_put(value, *args, **kwargs)

    def spying_submit(fn, job, shared_ref, name):
        refs.append(shared_ref)
        return real_submit(fn, job, shared_ref, name)

    monkeypatch.setattr(ray, "put", counting_put)
    monkeypatch.setattr(ray_executor, "_submit", spying_submit)
    shared = {"base": b"\x01" * 2_000_000, "extra": b"\x02" * 10}
    jobs = [{"name": f"j{i}"} for i in range(4)]
    results = ray_executor.map(jobs_mod.shared_sizes, jobs, shared, progress=False)
    assert len(puts) == 1 and puts[0] == shared
    assert len(refs) == 4 and all(isinstance(r, ray.ObjectRef) for r in refs)
    assert len({r.hex() for r in refs}) == 1  # the same object for every task, not a copy each
    assert all(r["sizes"] == {"base": 2_000_000, "extra": 10} and r["types"] == ["bytes"] for r in results)


@requires_ray
def test_local_ray_listens_on_loopback_only(ray_executor):
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    psutil = pytest.importorskip("psutil")
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening, "found none of Ray's listeners"
    assert {c.laddr.ip for c in listening} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening


@requires_ray
def test_ray_retries_a_dead_worker(ray_executor, tmp_path):
    results = ray_executor.map(jobs_mod.die_once, [{"name": "oom-killed", "marker": str(tmp_path / "m")}],
                               progress=False)
    assert results == [{"name": "oom-killed", "ok": True}]


@requires_ray
def test_ray_worker_that_always_dies_is_a_clear_error(ray_executor):
    no_retries = RayExecutor(ExecutorOptions(max_retries=0))  # joins the session's Ray
    with pytest.raises(JobError) as info:
        no_retries.map(jobs_mod.die, [{"name": "segfault"}], progress=False)
    assert str(info.value).startswith("job #0 (segfault) failed: its Ray worker died")
    no_retries.close()
    assert ray.is_initialized()  # not its Ray to shut down
