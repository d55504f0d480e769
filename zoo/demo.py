"""``make demo``: a two-minute tour of zoo's registry on real data (scikit-learn's 8x8 digits, offline).

It trains one small expert per task of Split-Digits (classes 0-4, then 5-9), stores them in a fresh local
registry, lists and verifies them with the ``zoo`` CLI, reloads each expert from its safetensors files, and
checks that the reloaded model scores exactly what the trained one did.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn


def _digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    as_t = lambda a, dt: torch.tensor(a, dtype=dt)  # noqa: E731
    return as_t(xtr, torch.float32), as_t(ytr, torch.long), as_t(xte, torch.float32), as_t(yte, torch.long)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def main() -> None:
    """Run the demo and print what each step did."""
    from registry import LocalRegistry
    from zoo.models import create_model

    torch.manual_seed(0)
    xtr, ytr, xte, yte = _digits()
    root = Path(tempfile.mkdtemp(prefix="zoo-demo-")) / "registry"
    reg = LocalRegistry(root)
    print(f"registry: {root}")
    scores = {}
    for task, classes in enumerate([range(0, 5), range(5, 10)]):
        classes = list(classes)
        tr = torch.isin(ytr, torch.tensor(classes))
        te = torch.isin(yte, torch.tensor(classes))
        model = create_model("mlp", 10, in_features=64, hidden=128)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        start = time.time()
        for _ in range(60):
            perm = torch.randperm(int(tr.sum()))
            for idx in perm.split(64):
                loss = nn.functional.cross_entropy(model(xtr[tr][idx]), ytr[tr][idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        acc = _accuracy(model, xte[te], yte[te])
        card = reg.save(model, name=f"digits-task{task}", tasks=[(task, classes)], method="demo",
                        hyperparameters={"epochs": 60, "lr": 1e-3, "batch_size": 64}, seed=0,
                        metrics={"test_accuracy": acc}, labels=["split-digits"])
        scores[card.id] = (acc, te)
        print(f"trained task {task} (classes {classes[0]}-{classes[-1]}) in {time.time() - start:.1f}s: "
              f"test accuracy {acc:.3f} -> expert {card.id}")
    reg.tag("base:latest", "digits-task1")
    for args in (["list"], ["show", "base:latest"], ["verify"]):
        print(f"\n$ zoo {' '.join(args)} --registry {root}")
        sys.stdout.flush()
        subprocess.run([sys.executable, "-m", "zoo.cli", *args, "--registry", str(root)], check=True)
    print()
    for expert_id, (acc, te) in scores.items():
        again = _accuracy(reg.get(expert_id).model(), xte[te], yte[te])
        status = "identical" if again == acc else "DIFFERENT"
        print(f"reloaded {expert_id} from safetensors: test accuracy {again:.3f} ({status})")
        if again != acc:
            sys.exit(1)


if __name__ == "__main__":
    main()
