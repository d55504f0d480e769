"""The benchmark scripts run (their --quick modes), so they never rot; their figures go to BENCHMARKS.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def test_the_gpu_script_runs_quick_on_any_device(tmp_path):
    out = tmp_path / "gpu.json"
    done = _run("bench/gpu.py", "--quick", "--json", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["quick"] and report["device"]
    t = report["training"][0]
    assert t["hand_steps_s"] > 0 and t["zoo_steps_s"] > 0 and t["ratio"] > 0
    c = report["consolidation"][0]
    assert c["batched_steps_s"] > 0 and c["looped_steps_s"] > 0 and c["step_gflop"] > 0
    assert report["inversion"]["image_steps_s"] > 0
    assert "| model | compile |" in done.stdout and "Consolidation, live teacher" in done.stdout


def test_the_train_loop_benchmark_runs(tmp_path):
    out = tmp_path / "loop.json"
    done = _run("bench/train_loop.py", "--quick", "--archs", "mlp", "--json", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["arch"] == "mlp" and rows[0]["hand_steps_s"] > 0 and rows[0]["zoo_steps_s"] > 0


def test_the_threads_benchmark_runs(tmp_path):
    out = tmp_path / "threads.json"
    done = _run("bench/threads.py", "--quick", "--json", str(out), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["setting"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"torch default", "zoo auto"}
    assert all(r["quiet_s"] > 0 and r["loaded_s"] > 0 for r in rows.values())
    assert rows["zoo auto"]["threads"]["loaded"] == 1  # the demo's MLP is small work: one thread


def test_thread_choice_follows_the_rules(monkeypatch):
    from zoo import threads

    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_cores", lambda window=0.2: 3.2)
    monkeypatch.delenv("ZOO_THREADS", raising=False)
    assert threads.choose_threads() == 5  # 8 usable, 3 busy
    assert threads.choose_threads(model_params=10_000) == 1  # small work
    assert threads.choose_threads(3) == 3 and threads.choose_threads("torch") is None
    monkeypatch.setattr(threads, "busy_cores", lambda window=0.2: 20.0)
    assert threads.choose_threads() == 1  # never below one
    monkeypatch.setenv("ZOO_THREADS", "2")
    assert threads.choose_threads() == 2
    import pytest
    from registry.errors import ZooError

    for bad in ("0", "many", "-1"):
        with pytest.raises(ZooError, match="threads"):
            threads.choose_threads(bad)


def test_the_cgroup_quota_caps_the_usable_cores(monkeypatch, tmp_path):
    from zoo import threads

    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 2.5)
    assert threads.usable_cores() == 3
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert threads.usable_cores() == 16
