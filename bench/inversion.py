#!/usr/bin/env python3
"""Benchmark of model inversion (``zoo.synthetic.invert``): synthetic images per second.

For each architecture an expert with BatchNorm is built (random weights with randomised running
statistics: the cost of a step does not depend on what the weights learnt), and a batch of N synthetic inputs
is optimised for S steps exactly as the ``inversion`` source does: differentiable crop + flip, CE with
temperature, L2 and blur priors, the BatchNorm prior summed over every layer, Adam, clipping. The figure is
N·S / seconds ("image-steps per second") and N / seconds for the default 500 steps ("images per second").

Architectures: the Split-Fashion-MNIST recipe's convnet (1×28×28, width 16) and resnet32 at 3×32×32.
Runs on the GPU when there is one (with bf16 autocast off: inversion optimises inputs in float32), else CPU.

Usage::

    python bench/inversion.py             # batches of 256, 20 timed steps (after 2 warm-up steps)
    python bench/inversion.py --quick     # batches of 32, 3 steps: checks that it runs
    python bench/inversion.py --markdown  # also print markdown for BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench.common import Table, machine_summary, print_markdown  # noqa: E402

import torch  # noqa: E402

from zoo.models import create_model  # noqa: E402
from zoo.synthetic import InversionConfig, balanced_labels, invert  # noqa: E402
from zoo.train import resolve_device  # noqa: E402

ARCHS = [("convnet (Fashion recipe)", "convnet", {"in_chans": 1, "width": 16, "img_size": 28}, (1, 28, 28)),
         ("resnet32", "resnet32", {}, (3, 32, 32))]


def _expert(arch: str, args: dict, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(arch, 10, **args)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    return model.to(device).eval()


def measure(arch: str, args: dict, shape: tuple[int, ...], batch: int, steps: int, device: torch.device) -> float:
    """Seconds per inversion step for a batch of ``batch`` images (median-free: one timed run of ``steps``)."""
    expert = _expert(arch, args, device)
    y = balanced_labels(list(range(10)), batch, device)
    gen = torch.Generator().manual_seed(0)
    invert(expert, y, range(10), shape, InversionConfig(steps=2), gen, device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    invert(expert, y, range(10), shape, InversionConfig(steps=steps), gen, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="batches of 32, 3 steps")
    ap.add_argument("--markdown", action="store_true", help="also print markdown")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    device = resolve_device(args.device)
    batch = args.batch or (32 if args.quick else 256)
    steps = args.steps or (3 if args.quick else 20)
    machine = machine_summary() + (f"; GPU {torch.cuda.get_device_name(0)}" if device.type == "cuda" else "")
    print(f"machine: {machine}; torch threads {torch.get_num_threads()}")
    table = Table(f"inversion on {device.type} (batch {batch}, {steps} timed steps)",
                  ["architecture", "s / step", "image-steps / s", "images / s at 500 steps"])
    for label, arch, kwargs, shape in ARCHS:
        per_step = measure(arch, kwargs, shape, batch, steps, device)
        table.add(label, f"{per_step:.3f}", f"{batch / per_step:,.0f}", f"{batch / (per_step * 500):.2f}")
    print(table.text())
    if args.markdown:
        print_markdown(machine, [table])
    return 0


if __name__ == "__main__":
    sys.exit(main())
