"""`make demo` (zoo/demo.py): the main job end to end, with BMC, Ex-Model and Model Zoo in one table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_runs_the_main_job_and_reports_it(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "zoo.demo", "--out", str(out), "-q"], capture_output=True, text=True,
                          cwd=ROOT, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:8]}
    assert set(rows) == {"finetune", "replay", "joint", "modelzoo", "bmc", "exmodel"}
    acc = {k: float(v[1]) for k, v in rows.items()}
    assert acc["bmc"] > 0.85 and acc["joint"] > 0.9 and acc["finetune"] < 0.3 and acc["exmodel"] > 0.3
    assert "zoo eval base:latest: class-IL" in text and "(= the run's" in text
    assert "lineage of base:latest:" in text and "├── base: main-digits-bmc-base-s3" in text
    assert "expert: main-digits-bmc-expert-t4" in text
    assert (out / "methods.png").exists() and f"figure: {out / 'methods.png'}" in text
    # the experts went to the registry with their buffers; the data-free student names them as parents
    from registry import LocalRegistry

    reg = LocalRegistry(out / "registry")
    experts = [c for c in reg.find() if "-bmc-expert-" in c.name]
    assert len(experts) == 5 and all(c.buffer for c in experts)
    student = reg.card("main-digits/exmodel:final")
    assert {p.id for p in student.parents} == {c.id for c in experts} and student.method == "exmodel-distillation"
    again = subprocess.run([sys.executable, "-m", "zoo.demo", "--out", str(out)], capture_output=True, text=True,
                           cwd=ROOT, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                           timeout=600)
    assert again.returncode == 0 and "already complete" in again.stderr
    assert again.stdout.splitlines()[:8] == text.splitlines()[:8]  # the same numbers, nothing retrained
