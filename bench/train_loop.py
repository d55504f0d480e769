#!/usr/bin/env python3
"""zoo's training loop (``zoo.train.fit``) against a plain hand-written PyTorch loop, side by side.

Both train the same freshly seeded model on the same tensors already on the device, with the same batch
size, optimiser and per-epoch shuffle (``randperm`` + indexing), no validation steering and no early
stopping; on CUDA both use bf16 autocast and channels_last for convnets (what ``fit`` does). The hand loop
is what a careful user writes: zero_grad(set_to_none), forward, cross-entropy, backward, step, and no host
sync inside the epoch. Runs alternate (hand, zoo, zoo, hand, ...) so that a busy machine slows both alike;
figures are medians of steps per second over the timed epochs (the first epoch of each run is warm-up).

Usage::

    python bench/train_loop.py                 # mlp and resnet32 on the CPU (and on CUDA when present)
    python bench/train_loop.py --quick         # seconds: a check that it runs
    python bench/train_loop.py --compile       # also with torch.compile (both loops)
    python bench/train_loop.py --markdown      # also print markdown for BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import Table, machine_summary, med, print_markdown, sync  # noqa: E402
from zoo.data import Split  # noqa: E402
from zoo.models import create_model  # noqa: E402
from zoo.train import TrainConfig, autocast, fit, make_optimizer, prepare_model  # noqa: E402

ARCHS: dict[str, tuple[tuple[int, ...], dict[str, Any]]] = {
    "mlp": ((64,), {"in_features": 64, "hidden": 256, "depth": 2}),
    "resnet32": ((3, 32, 32), {}),
    "wrn16_4": ((3, 32, 32), {}),
}


def data(shape: tuple[int, ...], n: int, classes: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random inputs of ``shape`` (CIFAR-shaped for the convnets) and labels, generated on the device."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn((n, *shape), generator=g, device=device)
    y = torch.randint(0, classes, (n,), generator=g, device=device)
    return x, y


def model_for(arch: str, classes: int, device: torch.device, cfg: TrainConfig, compiled: bool) -> torch.nn.Module:
    """The same seeded model for both loops (channels_last on CUDA for convnets), compiled if asked."""
    torch.manual_seed(0)
    model = prepare_model(create_model(arch, classes, **ARCHS[arch][1]), device, cfg)
    return torch.compile(model) if compiled else model


def hand_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, epochs: int) -> list[float]:
    """A plain loop; returns the seconds of each epoch."""
    device = x.device
    opt = make_optimizer(model.parameters(), cfg)
    gen = torch.Generator().manual_seed(0)
    seconds = []
    for _ in range(epochs):
        sync(device)
        t0 = time.perf_counter()
        model.train()
        for idx in torch.randperm(len(x), generator=gen).to(device).split(cfg.batch_size):
            with autocast(device, cfg.amp):
                loss = F.cross_entropy(model(x[idx]).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        seconds.append(time.perf_counter() - t0)
    return seconds


def zoo_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, epochs: int) -> list[float]:
    """``zoo.train.fit`` for ``epochs`` epochs, timed per epoch from its own history (``seconds``); the device
    is synchronised at the end of each epoch by fit's loss read-out."""
    result = fit(model, Split(x, y), None, TrainConfig(**{**cfg.__dict__, "epochs": epochs}),
                 num_classes=int(y.max()) + 1, generator=torch.Generator().manual_seed(0), progress=False)
    return [h["seconds"] for h in result.history]


def measure(arch: str, device: torch.device, n: int, batch: int, epochs: int, rounds: int,
            compiled: bool) -> dict[str, Any]:
    """Steps per second of both loops (medians over the timed epochs of every round)."""
    shape = ARCHS[arch][0]
    classes = 10
    x, y = data(shape, n, classes, device)
    cfg = TrainConfig(epochs=epochs, batch_size=batch, optimizer="sgd", lr=0.05, momentum=0.9)
    steps = -(-n // batch)
    times: dict[str, list[float]] = {"hand": [], "zoo": []}
    for r in range(rounds):
        order = ("hand", "zoo") if r % 2 == 0 else ("zoo", "hand")
        for name in order:
            model = model_for(arch, classes, device, cfg, compiled)
            fn = hand_loop if name == "hand" else zoo_loop
            times[name] += fn(model, x, y, cfg, epochs + 1)[1:]  # epoch 0: warm-up (and compilation)
    hand, zoo = steps / med(times["hand"]), steps / med(times["zoo"])
    return {"arch": arch, "device": str(device), "compile": compiled, "batch": batch, "steps_per_epoch": steps,
            "hand_steps_s": hand, "zoo_steps_s": zoo, "ratio": zoo / hand,
            "images_s": {"hand": hand * batch, "zoo": zoo * batch}}


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print (or write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument("--compile", action="store_true", help="also measure with torch.compile")
    parser.add_argument("--archs", default="mlp,resnet32")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for arch in args.archs.split(","):
            cpu = device.type == "cpu"
            n = (256 if args.quick else (8192 if arch == "mlp" else 1024)) if cpu else (2048 if args.quick else 50_000)
            batch = 64 if cpu else 256
            epochs, rounds = (1, 2) if args.quick else ((3, 4) if cpu else (3, 2))
            for compiled in ([False, True] if args.compile else [False]):
                rows.append(measure(arch, device, n, batch, epochs, rounds, compiled))
    table = Table("zoo fit vs a hand-written loop (steps/s, medians)",
                  ["model", "device", "compile", "batch", "hand steps/s", "zoo steps/s", "zoo / hand"])
    for r in rows:
        table.add(r["arch"], r["device"], "on" if r["compile"] else "off", r["batch"], f"{r['hand_steps_s']:.1f}",
                  f"{r['zoo_steps_s']:.1f}", f"{r['ratio']:.3f}")
    machine = machine_summary()
    print(f"Machine: {machine}\n\n{table.text()}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    if args.markdown:
        print_markdown(machine, [table])
    return 0


if __name__ == "__main__":
    sys.exit(main())
