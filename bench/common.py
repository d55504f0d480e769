"""What every benchmark script shares: a description of the machine, medians, and text/markdown tables."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path
from typing import Any, Sequence

import torch


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_summary() -> str:
    """CPU, usable cores, memory, OS, Python and torch: the start of every benchmark's machine line."""
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    try:
        mem_s = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        mem_s = ""
    return (f"{cpu_model()}, {usable} cores{'' if usable == cores else f' (of {cores})'}{mem_s}; "
            f"Linux {platform.release()}; Python {platform.python_version()}, torch {torch.__version__}")


def sync(device: torch.device) -> None:
    """Wait for the device (CUDA work is asynchronous), so that a timer stops when the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def med(xs: Sequence[float]) -> float:
    """The median."""
    return statistics.median(xs)


class Table:
    """Rows of cells printed as an aligned text table or as markdown (first column left, others right)."""

    def __init__(self, title: str, headers: list[str], note: str = ""):
        self.title, self.headers, self.note, self.rows = title, headers, note, []

    def add(self, *cells: Any) -> None:
        """Append one row."""
        self.rows.append([str(c) for c in cells])

    def text(self) -> str:
        """The table as aligned text, with its title and note."""
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
                  for i, h in enumerate(self.headers)]
        line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths)))
        out = [self.title, line(self.headers), "  ".join("-" * w for w in widths), *(line(r) for r in self.rows)]
        return "\n".join(out + ([self.note] if self.note else []))

    def markdown(self) -> str:
        """The table as markdown (without title)."""
        head = "| " + " | ".join(self.headers) + " |"
        sep = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.headers))) + "|"
        return "\n".join([head, sep, *("| " + " | ".join(r) + " |" for r in self.rows)])


def print_markdown(machine: str, tables: Sequence[Table]) -> None:
    """The tables as markdown for BENCHMARKS.md, after the machine line."""
    print("\n--- markdown ---\n")
    print(f"Machine: {machine}\n")
    for t in tables:
        print(f"**{t.title}**\n\n{t.markdown()}\n")
        if t.note:
            print(f"{t.note}\n")
