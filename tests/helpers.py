"""Small builders shared by the tests: tiny experts and registry snapshots."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import torch

from registry import Expert, ParentRef, write_expert
from zoo.models import create_model


def make_model(arch: str = "mlp", num_classes: int = 4, seed: int = 0, **kwargs: Any) -> torch.nn.Module:
    """A tiny model with seeded weights."""
    torch.manual_seed(seed)
    if arch == "mlp":
        kwargs = {"in_features": 16, "hidden": 8, "depth": 1, **kwargs}
    return create_model(arch, num_classes, **kwargs)


def make_expert(folder: Path, name: str = "tiny", seed: int = 0, arch: str = "mlp", num_classes: int = 4,
                tasks: Any = None, parents: tuple[ParentRef, ...] = (), buffer: bool = False,
                **kwargs: Any) -> Expert:
    """Write a tiny expert into ``folder`` and return it."""
    model = make_model(arch, num_classes, seed, **kwargs.pop("model_args", {}))
    buf = None
    if buffer:
        g = torch.Generator().manual_seed(seed)
        buf = {"x": torch.randn(6, 16, generator=g), "y": torch.arange(6) % num_classes,
               "features": torch.randn(6, 8, generator=g)}
    return write_expert(folder, model, name=name, tasks=tasks or [(0, range(num_classes))], parents=parents,
                        method="finetune", seed=seed, metrics={"accuracy": 0.5 + seed / 100},
                        hyperparameters={"lr": 0.01}, buffer=buf, **kwargs)


def snapshot(root: Path) -> dict[str, Any]:
    """Everything observable in a local registry: expert files with their sha256, index rows and tags."""
    files = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted((root / "experts").rglob("*")) if p.is_file()}
    with sqlite3.connect(root / "index.sqlite") as db:
        experts = sorted(db.execute("SELECT id, name, card FROM experts"))
        tags = sorted(db.execute("SELECT tag, id FROM tags"))
    return {"files": files, "experts": experts, "tags": tags}


def files_bytes(folder: Path) -> dict[str, bytes]:
    """The bytes of every file of a folder, by relative path (HF cache metadata excluded)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".cache" not in p.parts}


def interrupt_and_resume(recipe: Any, method_cls: type, stage: int, tmp_path: Path, monkeypatch: Any) -> tuple[dict, dict]:
    """Run ``recipe`` straight, then again interrupted at ``stage`` of ``method_cls`` and resumed in the same
    folder; return (straight results, resumed results)."""
    import pytest

    from zoo.runner import RunOptions, run_recipe

    straight = run_recipe(recipe, RunOptions(out=tmp_path / "straight", registry="none", progress=False))
    original = method_cls.train_stage

    def crash(self, t):
        if t == stage:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, t)

    monkeypatch.setattr(method_cls, "train_stage", crash)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, RunOptions(out=tmp_path / "resumed", registry="none", progress=False))
    trained: list[int] = []

    def counting(self, t):
        trained.append(t)
        return original(self, t)

    monkeypatch.setattr(method_cls, "train_stage", counting)
    resumed = run_recipe(recipe, RunOptions(out=tmp_path / "resumed", registry="none", progress=False))
    monkeypatch.setattr(method_cls, "train_stage", original)
    resumed["trained_on_resume"] = trained
    return straight, resumed


def assert_metrics_recompute(result: dict) -> None:
    """A method's results.json block: forgetting and BWT recomputed from its accuracy matrices and
    ``learned_at`` with ALGORITHMS.md §0's definitions (written out here independently of zoo.metrics)."""
    learned = result["learned_at"]
    for protocol, m in result["accuracy_matrix"].items():
        t = len(m)
        tasks = [j for j in range(t) if learned[j] < t - 1]
        if not tasks:
            assert result["forgetting"][protocol] is None and result["bwt"][protocol] is None
            continue
        f = sum(max(m[l][j] for l in range(learned[j], t - 1)) - m[t - 1][j] for j in tasks) / len(tasks)
        b = sum(m[t - 1][j] - m[learned[j]][j] for j in tasks) / len(tasks)
        assert abs(result["forgetting"][protocol] - f) < 1e-12, (protocol, result["forgetting"][protocol], f)
        assert abs(result["bwt"][protocol] - b) < 1e-12, (protocol, result["bwt"][protocol], b)
