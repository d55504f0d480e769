"""Budget sweeps: every method at several aligned memory budgets, and accuracy-versus-memory curves.

``zoo run RECIPE --budgets 500,1000,2000`` (or ``budget.sweep`` in the recipe) runs the recipe once per
budget, each into ``<out>/budget-<value>/`` (a normal run folder, resumable), then writes

    sweep.json    every point (method, budget, memory in MB, last and average accuracy) and AUC-A / AUC-L
    sweep.png     last and average accuracy against memory, one line per method

Memory is each method's total under the budget's convention (models + exemplars, MEMO's uint8 exemplars),
in MB of 10^6 bytes. "Last" is the final average class-IL accuracy A_T, "average" the average incremental
accuracy mean_t A_t. AUC-A and AUC-L are the areas under those curves by the trapezoid rule, with accuracy
in percent and memory in MB, over the budgets swept (MEMO's survey reports them this way).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

from .budget import BudgetSpec
from .metrics import save_figure
from .recipe import Recipe
from .schema import RecipeError


def budget_label(value: float) -> str:
    """A budget value as a folder and name suffix, exact: ``2000``, ``2.5``, ``12345679``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def sweep_recipes(recipe: Recipe, values: Sequence[float]) -> list[tuple[float, Recipe]]:
    """One recipe per budget value (in the unit of the recipe's budget; without a budget, in exemplars of
    the reference "B exemplars + one backbone per task"), each named ``<name>-b<value>``."""
    if not values:
        raise RecipeError("recipe: a budget sweep needs at least one budget")
    base = recipe.budget or BudgetSpec(exemplars=0)
    from .recipe import _check_budget

    out = []
    for v in values:
        spec = base.with_value(v)
        sub = dataclasses.replace(recipe, name=f"{recipe.name}-b{budget_label(spec.value)}", budget=spec)
        _check_budget(sub)  # the rules a recipe's own budget obeys (no explicit memory sizes, one architecture)
        out.append((spec.value, sub))
    labels = [budget_label(v) for v, _ in out]
    if len(set(labels)) != len(labels):
        raise RecipeError("recipe: the sweep lists the same budget twice")
    return out


def trapezoid(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Area under the points (x sorted ascending) by the trapezoid rule; None with fewer than two points."""
    if len(x) < 2:
        return None
    return sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1))


def summarize_sweep(runs: list[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    """Curves and AUCs from each budget's combined results (``run_recipe``'s return value)."""
    methods: dict[str, list[dict[str, Any]]] = {}
    fixed: dict[str, str] = {}
    for value, results in runs:
        convention = results["budget"]["reference"]["convention"]
        for key, r in results["methods"].items():
            if not r.get("budget", {}).get("applies"):
                fixed[key] = r.get("budget", {}).get("why", "the budget does not apply")
                continue
            total = r["memory"]["memo"][convention]["total_bytes"]
            methods.setdefault(key, []).append({
                "budget": value, "megabytes": total / 1e6, "exemplars": r["memory"]["exemplars"],
                "last_accuracy": r["final_average_accuracy"]["class_il"],
                "average_accuracy": r["average_incremental_accuracy"]["class_il"]})
    curves = {}
    for key, points in methods.items():
        points.sort(key=lambda p: p["megabytes"])
        mb = [p["megabytes"] for p in points]
        curves[key] = {"points": points,
                       "auc_a": trapezoid(mb, [100 * p["average_accuracy"] for p in points]),
                       "auc_l": trapezoid(mb, [100 * p["last_accuracy"] for p in points])}
    return {"budgets": [v for v, _ in runs], "convention": runs[0][1]["budget"]["reference"]["convention"],
            "units": {"memory": "MB (10^6 bytes)", "accuracy": "class-IL, %", "auc": "% x MB (trapezoid)"},
            "methods": curves, "not_swept": fixed}


def plot_sweep(summary: dict[str, Any], path: Path, title: str = "") -> None:
    """Last and average accuracy against memory (MB), one line per method; PNG (and SVG beside it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (field, name) in zip(axes, (("average_accuracy", "average"), ("last_accuracy", "last"))):
        for key, curve in summary["methods"].items():
            pts = curve["points"]
            auc = curve["auc_a" if name == "average" else "auc_l"]
            ax.plot([p["megabytes"] for p in pts], [100 * p[field] for p in pts], marker="o",
                    label=key + (f" (AUC {auc:.1f})" if auc is not None else ""))
        ax.set_xlabel(f"memory, MB ({summary['convention']})")
        ax.set_title(f"{name} accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("class-IL accuracy (%)")
    save_figure(fig, path, title)


def run_sweep(recipe: Recipe, values: Sequence[float], opts: Any) -> dict[str, Any]:
    """Run ``recipe`` at each budget into ``opts.out/budget-<value>/`` and write ``sweep.json`` / ``sweep.png``
    there; return the summary."""
    from .runner import run_recipe

    plans = sweep_recipes(recipe, values)
    runs = []
    for value, sub in plans:
        sub_opts = dataclasses.replace(opts, out=Path(opts.out) / f"budget-{budget_label(value)}")
        runs.append((value, run_recipe(sub, sub_opts)))
    summary = summarize_sweep(runs)
    summary["recipe"] = recipe.name
    summary["runs"] = {budget_label(v): str(Path(opts.out) / f"budget-{budget_label(v)}") for v, _ in runs}
    out = Path(opts.out)
    tmp = out / "sweep.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "sweep.json")
    plot_sweep(summary, out / "sweep.png", title=f"{recipe.name}: accuracy vs memory")
    return summary


def sweep_table(summary: dict[str, Any]) -> str:
    """A plain-text table: per method, each budget's MB / last / average, and the AUCs."""
    lines = [f"{'method':<12} {'budget':>8} {'MB':>8} {'exemplars':>9} {'last':>7} {'average':>7}"]
    for key, curve in summary["methods"].items():
        for p in curve["points"]:
            lines.append(f"{key:<12} {budget_label(p['budget']):>8} {p['megabytes']:8.3f} {p['exemplars']:9d} "
                         f"{p['last_accuracy']:7.4f} {p['average_accuracy']:7.4f}")
    lines.append("")
    lines.append(f"{'method':<12} {'AUC-A':>9} {'AUC-L':>9}")
    for key, curve in summary["methods"].items():
        cell = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"{key:<12} {cell(curve['auc_a']):>9} {cell(curve['auc_l']):>9}")
    return "\n".join(lines)
