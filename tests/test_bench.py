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
