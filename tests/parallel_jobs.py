"""Job functions for tests/test_parallel.py and bench/parallel.py.

They live in an importable module (``tests.parallel_jobs``) because process-pool and Ray workers import a job
function by name; a function defined inside a test could not be found there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.parallel import TransientError, bytes_to_tensors, tensors_to_bytes

IN, OUT = 8, 3


def base_state(seed: int = 0) -> bytes:
    """The shared starting point: a tiny linear model's weights as safetensors bytes."""
    torch.manual_seed(seed)
    return tensors_to_bytes(nn.Linear(IN, OUT).state_dict())


def linear_job(i: int, n: int = 64, steps: int = 20) -> dict[str, Any]:
    """Job ``i``: its own synthetic data (safetensors bytes) and seed."""
    g = torch.Generator().manual_seed(100 + i)
    x = torch.randn(n, IN, generator=g)
    y = torch.randint(0, OUT, (n,), generator=g)
    return {"name": f"task-{i}", "seed": i, "steps": steps, "data": tensors_to_bytes({"x": x, "y": y})}


def train_linear(job: dict[str, Any], shared: dict[str, bytes]) -> dict[str, Any]:
    """A few SGD steps of the shared base model on the job's data; returns the weights as bytes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic in every executor, so results compare bit for bit
    try:
        torch.manual_seed(job["seed"])
        model = nn.Linear(IN, OUT)
        model.load_state_dict(bytes_to_tensors(shared["base"]))
        data = bytes_to_tensors(job["data"])
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(job["steps"]):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(data["x"]), data["y"])
            loss.backward()
            opt.step()
        return {"name": job["name"], "state": tensors_to_bytes(model.state_dict()), "loss": float(loss.detach()),
                "pid": os.getpid()}
    finally:
        torch.set_num_threads(threads)


def train_mlp(job: dict[str, Any], shared: dict[str, bytes]) -> dict[str, Any]:
    """Train a small MLP for ``job['seconds']`` of wall time (the benchmark's unit of work)."""
    torch.manual_seed(job["seed"])
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    x, y = torch.randn(512, 256), torch.randint(0, 10, (512,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    steps, end = 0, time.perf_counter() + job["seconds"]
    while time.perf_counter() < end:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        steps += 1
    return {"name": job["name"], "steps": steps, "state": tensors_to_bytes(model.state_dict())}


def flaky(job: dict[str, Any], shared: dict[str, bytes]) -> dict[str, Any]:
    """Fails with TransientError on the first attempt (leaving a marker file), succeeds on the next."""
    marker = Path(job["marker"])
    if not marker.exists():
        marker.write_text("attempted")
        raise TransientError("first attempt lost its worker")
    return {"name": job["name"], "ok": True}


def always_transient(job: dict[str, Any], shared: dict[str, bytes]) -> dict[str, Any]:
    """Fails with TransientError on every attempt, counting attempts in a file."""
    counter = Path(job["counter"])
    counter.write_text(str(int(counter.read_text()) + 1 if counter.exists() else 1))
    raise TransientError("the GPU is still busy")


def maybe_fail(job: dict[str, Any], shared: dict[str, bytes]) -> dict[str, Any]:
    """Raises a non-retryable error for the job marked ``bad`` (with a multi-line message), else succeeds."""
    if job.get("bad"):
        raise ValueError("learning rate must be positive\n  got: -0.1")
    return {"name": job["name"], "ok": True}


def die_once(job: dict[str, Any], shared: dict[str, bytes]) -> dict[str, Any]:
    """Kills its own worker process on the first attempt (a marker file remembers), succeeds afterwards."""
    marker = Path(job["marker"])
    if not marker.exists():
        marker.write_text("died")
        os._exit(1)
    return {"name": job["name"], "ok": True}


def die(job: dict[str, Any], shared: dict[str, bytes]) -> dict[str, Any]:
    """Kills its worker process every time (a native crash, an OOM kill)."""
    os._exit(1)


def return_tensor(job: dict[str, Any], shared: dict[str, bytes]) -> dict[str, Any]:
    """Breaks the contract: returns a tensor instead of safetensors bytes."""
    return {"name": job["name"], "weights": [torch.zeros(2)]}


def shared_sizes(job: dict[str, Any], shared: dict[str, bytes]) -> dict[str, Any]:
    """Reports what arrived as ``shared`` (its keys and sizes)."""
    return {"name": job["name"], "sizes": {k: len(v) for k, v in shared.items()},
            "types": sorted({type(v).__name__ for v in shared.values()})}
