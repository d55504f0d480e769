#!/usr/bin/env python3
"""The demo's wall time quiet and beside one competing busy process, torch's default threads vs zoo's choice.

Measured in one run, side by side: ``zoo run RECIPE`` (default ``recipes/demo.yaml``, the Split-Digits
baselines; ``--recipe recipes/main-digits.yaml`` for the main job) as a fresh process, under two settings:

* ``torch default``: ``ZOO_THREADS=torch`` (one intra-op thread per core, OpenMP's default wait policy);
* ``zoo auto``: zoo's default (``zoo/threads.py``: one thread per idle usable core, one for a small model,
  OpenMP told to sleep rather than spin while waiting).

Each setting runs quiet and with one competing busy process (a pure-Python spin loop, one core's worth), in
alternating order, ``--reps`` times; figures are medians of wall seconds, and the ratio loaded / quiet per
setting is what a user on a shared machine feels. ``OMP_NUM_THREADS`` is removed from the children's
environment so that the settings, not the caller's shell, decide.

Usage::

    python bench/threads.py               # 3 reps (a few minutes on 2 cores)
    python bench/threads.py --quick       # 1 rep, 1 epoch: checks that it runs
    python bench/threads.py --markdown    # also print markdown for BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench.common import Table, machine_summary, med, print_markdown  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"torch default": {"ZOO_THREADS": "torch"}, "zoo auto": {}}
SPIN = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def run_once(recipe: Path, setting: dict[str, str], extra: list[str]) -> tuple[float, int]:
    """Wall seconds of one ``zoo run`` in a fresh process, and the torch threads it used."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "ZOO_THREADS", "OMP_WAIT_POLICY")}
    env.update(setting)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "zoo.cli", "-q", "run", str(recipe), "--out", tmp, "--registry", "none",
                        *extra], check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        threads = json.loads((Path(tmp) / "results.json").read_text())["machine"]["torch_threads"]
    return seconds, threads


def main(argv: list[str] | None = None) -> int:
    """Measure every (setting, condition) pair and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "demo.yaml")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    reps = 1 if args.quick else args.reps
    extra = ["--set", "training.epochs=1"] if args.quick else []
    times: dict[tuple[str, str], list[float]] = {}
    threads: dict[tuple[str, str], int] = {}
    for rep in range(reps):
        for condition in (("quiet", "loaded") if rep % 2 == 0 else ("loaded", "quiet")):
            spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if condition == "loaded" else None
            try:
                if spinner is not None:
                    time.sleep(1.0)  # the competitor is running before the run starts
                names = list(SETTINGS) if rep % 2 == 0 else list(SETTINGS)[::-1]
                for name in names:
                    seconds, n = run_once(args.recipe, SETTINGS[name], extra)
                    times.setdefault((name, condition), []).append(seconds)
                    threads[(name, condition)] = n
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    table = Table(f"{args.recipe.name}: wall seconds (median of {reps}), quiet and beside one busy process",
                  ["setting", "threads (quiet / loaded)", "quiet s", "loaded s", "loaded / quiet"])
    rows = []
    for name in SETTINGS:
        q, lo = med(times[(name, "quiet")]), med(times[(name, "loaded")])
        table.add(name, f"{threads[(name, 'quiet')]} / {threads[(name, 'loaded')]}", f"{q:.1f}", f"{lo:.1f}",
                  f"{lo / q:.2f}")
        rows.append({"setting": name, "quiet_s": q, "loaded_s": lo, "ratio": lo / q,
                     "threads": {"quiet": threads[(name, "quiet")], "loaded": threads[(name, "loaded")]},
                     "all": {c: times[(name, c)] for c in ("quiet", "loaded")}})
    default_loaded = med(times[("torch default", "loaded")])
    auto_loaded = med(times[("zoo auto", "loaded")])
    machine = machine_summary()
    print(f"Machine: {machine}\n\n{table.text()}\n\nbeside a busy process, zoo auto is "
          f"{default_loaded / auto_loaded:.1f}x faster than torch's default")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "recipe": str(args.recipe), "rows": rows}, indent=2) + "\n")
    if args.markdown:
        print_markdown(machine, [table])
    return 0


if __name__ == "__main__":
    sys.exit(main())
