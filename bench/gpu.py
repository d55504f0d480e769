#!/usr/bin/env python3
"""GPU figures in one prepared script: training, consolidation, inversion and Ray sharing, in under 8 minutes.

Every figure is a ratio or a rate measured side by side in this one run, on the device named in the output:

1. **Expert training** images/s for resnet32 and wrn16_4 on 32x32 CIFAR-shaped tensors generated on the
   device (bf16 autocast, channels_last), zoo's ``fit`` against a hand-written loop, with ``torch.compile``
   off and on (``bench/train_loop.py``'s two loops).
2. **Consolidation** steps/s with the live teacher, the K experts batched (``vmap``) against looped, at K = 4,
   8 and 16 (``bench/consolidate.py``'s ``run_consolidate``: the real ``zoo.consolidate.consolidate``), with
   the FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode``, the achieved TFLOP/s, and
   the MFU against the device's dense bf16 peak (H100/H200 SXM: 989 TFLOP/s).
3. **Inversion** images/s (500-step model inversion of resnet32, ``bench/inversion.py``'s ``measure``).
4. **Ray**: 4 BMC expert jobs on one GPU at ``num_gpus: 0.25`` each (running together) against the same 4
   jobs one after another on the local executor.

``--quick`` runs the same code on the CPU (or the GPU) with tiny sizes in seconds; ``tests/test_bench.py``
runs it so the script never rots. Output: a JSON file (``--json``, default ``bench-gpu.json``) and a markdown
table on stdout, ready for BENCHMARKS.md.

Usage::

    python bench/gpu.py                    # on a GPU machine: the full run (< 8 minutes on an H100/H200)
    python bench/gpu.py --quick            # seconds, anywhere
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

from bench.common import Table, machine_summary, med  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s) by device name; MFU is reported only for a known device.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
                    "RTX 4090": 165.2, "RTX 3090": 71.0}


def peak_tflops(device: torch.device) -> float | None:
    """The device's dense bf16 peak, when it is one we know."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def training(device: torch.device, quick: bool, deadline: float) -> list[dict[str, Any]]:
    """Section 1: images/s of zoo's fit and of the hand loop, compile off and on."""
    from bench import train_loop

    rows = []
    n = 128 if quick else 50_000
    batch = 64 if quick else 256
    for arch in (["resnet32"] if quick else ["resnet32", "wrn16_4"]):
        for compiled in ([False] if quick or device.type == "cpu" else [False, True]):
            if time.perf_counter() > deadline:
                break
            rows.append(train_loop.measure(arch, device, n, batch, epochs=1 if quick else 2,
                                           rounds=1 if quick else 2, compiled=compiled))
    return rows


def step_flops(arch: str, k: int, device: torch.device, batch: int) -> float:
    """FLOPs of one consolidation step (counted over a short consolidate() call, divided by its steps)."""
    from torch.utils.flop_counter import FlopCounterMode

    from bench import consolidate as bc
    import zoo.consolidate as zc

    num_classes = bc.CLASSES_PER_TASK * k
    student, experts = bc.build_models(arch, k, num_classes, device, seed=0)
    shape = bc.ARCHS[arch][0]
    buffers = bc.make_buffers(k, 4 * batch, shape, student.num_features, device, torch.Generator().manual_seed(0))
    steps = 2
    # no validation split: only the steps are counted
    cfg = zc.ConsolidationConfig(epochs=1, batch_size=batch, lr=1e-3, teacher="live", steps_per_epoch=steps,
                                 val_fraction=0.0)
    counter = FlopCounterMode(display=False)
    with counter:
        zc.consolidate(student, buffers, [], cfg, seen_classes=list(range(num_classes)), num_classes=num_classes,
                       experts=experts, generator=torch.Generator().manual_seed(0), progress=False)
    return counter.get_total_flops() / steps


def consolidation(device: torch.device, quick: bool, deadline: float) -> list[dict[str, Any]]:
    """Section 2: batched vs looped steps/s at K = 4, 8, 16, with TFLOP/s and MFU."""
    from bench import consolidate as bc
    import zoo.consolidate as zc

    arch = "mlp" if quick else "resnet32"  # the same code path; quick keeps it to seconds on a CPU
    batch = 64 if quick else 256
    steps = 2 if quick else 25
    peak = peak_tflops(device)
    rows = []
    for k in ([4] if quick else [4, 8, 16]):
        if time.perf_counter() > deadline:
            break
        num_classes = bc.CLASSES_PER_TASK * k
        student, experts = bc.build_models(arch, k, num_classes, device, seed=0)
        buffers = bc.make_buffers(k, max(4 * batch, 256), bc.ARCHS[arch][0], student.num_features, device,
                                  torch.Generator().manual_seed(0))
        cfg = zc.ConsolidationConfig(epochs=2 if quick else 3, batch_size=batch, lr=1e-3, teacher="live",
                                     steps_per_epoch=steps)
        secs = {"batched": [], "looped": []}
        for r in range(1 if quick else 2):
            for looped in ((False, True) if r % 2 == 0 else (True, False)):
                epochs, _ = bc.run_consolidate(student, experts, buffers, num_classes, cfg, device, looped)
                secs["looped" if looped else "batched"] += [s / steps for s in epochs]
        flops = step_flops(arch, k, device, batch)
        batched, looped = 1 / med(secs["batched"]), 1 / med(secs["looped"])
        tflops = flops * batched / 1e12
        rows.append({"arch": arch, "k": k, "batch": batch, "batched_steps_s": batched, "looped_steps_s": looped,
                     "speedup": batched / looped, "step_gflop": flops / 1e9, "tflops": tflops,
                     "mfu": tflops / peak if peak else None})
    return rows


def inversion(device: torch.device, quick: bool) -> dict[str, Any]:
    """Section 3: images/s of 500-step inversion (``steps`` shortened in --quick)."""
    from bench.inversion import measure

    batch = 8 if quick else 256
    steps = 2 if quick else 50
    seconds_per_step = measure("resnet32", {}, (3, 32, 32), batch, steps, device)
    return {"arch": "resnet32", "batch": batch, "image_steps_s": batch / seconds_per_step,
            "images_s_at_500_steps": batch / (seconds_per_step * 500)}


def ray_sharing(device: torch.device, quick: bool) -> dict[str, Any] | None:
    """Section 4: 4 expert jobs sharing one GPU through Ray (num_gpus 0.25) vs in sequence (local)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return None
    from bench.consolidate import expert_jobs
    from zoo.methods.bmc import train_expert_job
    from zoo.parallel import ExecutorOptions, make_executor

    jobs, shared = expert_jobs(4, 500 if quick else 20_000, 1 if quick else 8, 200)
    for job in jobs:
        job["device"] = str(device)
    out: dict[str, Any] = {"jobs": len(jobs)}
    gpus = 0.25 if device.type == "cuda" else 0.0
    for kind, options in (("local", ExecutorOptions()), ("ray", ExecutorOptions(num_gpus=gpus, num_cpus=1))):
        executor = make_executor(kind, options)
        try:
            executor.map(train_expert_job, jobs[:1], shared)  # warm-up (Ray: start the workers)
            t0 = time.perf_counter()
            executor.map(train_expert_job, jobs, shared)
            out[f"{kind}_s"] = time.perf_counter() - t0
        finally:
            executor.close()
    out["speedup"] = out["local_s"] / out["ray_s"]
    out["num_gpus_per_job"] = gpus
    return out


def main(argv: list[str] | None = None) -> int:
    """Run every section (each stops early if the time budget runs out) and write JSON + markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds (CPU or GPU)")
    parser.add_argument("--json", type=Path, default=Path("bench-gpu.json"))
    parser.add_argument("--budget", type=float, default=420.0, help="seconds before sections are cut short")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray section")
    parser.add_argument("--ray", action="store_true", help="run the Ray section in --quick too (it starts Ray)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    deadline = start + args.budget
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no GPU present)"
    report: dict[str, Any] = {"device": name, "machine": machine_summary(), "quick": args.quick,
                              "torch": torch.__version__, "peak_bf16_tflops": peak_tflops(device)}
    report["training"] = training(device, args.quick, deadline)
    report["consolidation"] = consolidation(device, args.quick, deadline)
    report["inversion"] = inversion(device, args.quick)
    report["ray"] = None if args.no_ray or (args.quick and not args.ray) else ray_sharing(device, args.quick)
    report["seconds"] = time.perf_counter() - start
    args.json.write_text(json.dumps(report, indent=2) + "\n")

    t1 = Table("Expert training (images/s)", ["model", "compile", "batch", "hand loop", "zoo fit", "zoo / hand"])
    for r in report["training"]:
        t1.add(r["arch"], "on" if r["compile"] else "off", r["batch"], f"{r['images_s']['hand']:,.0f}",
               f"{r['images_s']['zoo']:,.0f}", f"{r['ratio']:.3f}")
    t2 = Table("Consolidation, live teacher (steps/s)",
               ["K", "batch", "batched", "looped", "batched / looped", "GFLOP/step", "TFLOP/s", "MFU"])
    for r in report["consolidation"]:
        t2.add(r["k"], r["batch"], f"{r['batched_steps_s']:.2f}", f"{r['looped_steps_s']:.2f}", f"{r['speedup']:.2f}",
               f"{r['step_gflop']:.1f}", f"{r['tflops']:.2f}", "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%")
    inv = report["inversion"]
    lines = [f"Device: {name} ({report['machine']}); {report['seconds']:.0f} s in all", "",
             f"**{t1.title}**", "", t1.markdown(), "", f"**{t2.title}**", "", t2.markdown(), "",
             f"**Inversion** (resnet32, batch {inv['batch']}): {inv['image_steps_s']:,.0f} image-steps/s, "
             f"{inv['images_s_at_500_steps']:,.1f} images/s at 500 steps"]
    if report["ray"]:
        r = report["ray"]
        lines.append(f"\n**Ray**: {r['jobs']} expert jobs at num_gpus {r['num_gpus_per_job']}: {r['ray_s']:.1f} s "
                     f"together vs {r['local_s']:.1f} s in sequence ({r['speedup']:.2f}x)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
