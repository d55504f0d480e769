"""``make demo``: zoo's main job end to end on Split-Digits, offline, in under a minute on 2 CPU cores.

1. ``zoo run recipes/main-digits.yaml``: Model Zoo's boosting scheduler picks each expert's group, BMC's
   experts train in parallel worker processes and go to ``runs/demo/registry`` with their buffers, BMC
   consolidates them into the base tagged ``base:latest``; Model Zoo, replay, finetune and joint beside it.
2. A data-free Ex-Model student is distilled from the same registry experts (model inversion: no data).
3. ``zoo eval base:latest`` on the recipe's stream reproduces the run's BMC number.
4. One table of every method, the lineage of ``base:latest`` as a tree, and the figure comparing them.

Running it again reuses the finished run (``already complete``) and the student (its tag).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "main-digits.yaml"
STUDENT_TAG = "main-digits/exmodel:final"


def exmodel_student(reg: Any, recipe: Any, progress: bool) -> Any:
    """Distil (once) a data-free student from the run's BMC experts, tagged :data:`STUDENT_TAG`."""
    from registry import Query
    from zoo.distill import DistillConfig, distill_registry_experts
    from zoo.synthetic import InversionConfig

    if STUDENT_TAG in reg.tags():
        return reg.card(STUDENT_TAG)
    experts = [c.id for c in reg.find(Query(method="bmc")) if "-expert-" in c.name]
    card = distill_registry_experts(
        reg, experts, DistillConfig(iterations=300, batch_size=64, lr=0.01), source="inversion",
        inversion=InversionConfig(steps=100), buffer_size=500, name="main-digits-exmodel-student",
        device="cpu", seed=recipe.seed, progress=progress)
    reg.tag(STUDENT_TAG, card.id)
    return card


def table(results: dict[str, Any], extra: dict[str, dict[str, float]]) -> str:
    """Final average accuracy (both protocols), forgetting and memory of every method, one row each."""
    from zoo.runner import text_table

    rows = [["method", "class-IL acc", "task-IL acc", "class-IL forget", "models", "exemplars"]]
    for key, r in results["methods"].items():
        f = r["forgetting"]["class_il"]
        rows.append([key, f"{r['final_average_accuracy']['class_il']:.4f}", f"{r['final_average_accuracy']['task_il']:.4f}",
                     "-" if f is None else f"{f:.4f}", str(r["memory"]["models"]),
                     "all" if r["memory"]["all_data"] else str(r["memory"]["exemplars"])])
    for key, acc in extra.items():
        rows.append([key, f"{acc['class_il']:.4f}", f"{acc['task_il']:.4f}", "-", "1", "0 (data-free)"])
    return text_table(rows)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; print the table, the lineage and the figure path."""
    parser = argparse.ArgumentParser(prog="python -m zoo.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress or per-stage log lines")
    args = parser.parse_args(argv)

    from registry import open_registry
    from registry.errors import ZooError
    from registry.lineage import lineage_tree
    from zoo.evaluate import evaluate_experts
    from zoo.metrics import plot_methods
    from zoo.recipe import load_recipe
    from zoo.runner import RunOptions, run_recipe

    start = time.perf_counter()
    if not args.quiet:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("zoo: %(message)s"))
        logging.getLogger("zoo").addHandler(console)
    try:
        recipe = load_recipe(RECIPE)
        registry = args.out / "registry"
        results = run_recipe(recipe, RunOptions(out=args.out, registry=str(registry), progress=False))
        if results.get("already_complete"):
            print(f"zoo: {args.out} is already complete; showing its results (remove it to run again)",
                  file=sys.stderr)
        reg = open_registry(str(registry))
        student = exmodel_student(reg, recipe, progress=False)
        ex = evaluate_experts([reg.get(student.id)], recipe, device="cpu")["average"]
        base = evaluate_experts([reg.get("base:latest")], recipe, device="cpu")["average"]
    except ZooError as e:
        print(f"zoo: error: {e}", file=sys.stderr)
        return 1
    run_bmc = results["methods"]["bmc"]["final_average_accuracy"]["class_il"]
    figure = args.out / "methods.png"
    plot_methods(results, figure, title="main-digits: every method, stage by stage",
                 extra={"exmodel (data-free, from BMC's experts)": ex})
    print(table(results, {"exmodel": ex}))
    same = abs(base["class_il"] - run_bmc) < 1e-9
    print(f"\nzoo eval base:latest: class-IL {base['class_il']:.4f} ({'=' if same else '!='} the run's {run_bmc:.4f})")
    print("\nlineage of base:latest:")
    print("\n".join(lineage_tree(reg, reg.card("base:latest"))))
    print(f"\nfigure: {figure}")
    print(f"registry: {registry} ({len(reg.find())} experts); {time.perf_counter() - start:.1f} s")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
