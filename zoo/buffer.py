"""BMC buffers: what an expert leaves behind so that consolidation never needs its training data or weights.

A buffer is a class-balanced random sample of one task's training data with, for each sample, the
penultimate features the expert computed on it. Buffers are saved with their expert as
``buffer.safetensors`` (tensors ``x``, ``y``, ``features``, ``classes``, ``task``) and make up BMC's memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .data import Split
from .models import features


@dataclass
class Buffer:
    """Samples ``x`` with labels ``y`` (global), the producing expert's ``features``, the task's ``classes``
    (global ids) and the task id."""

    x: torch.Tensor
    y: torch.Tensor
    features: torch.Tensor
    classes: torch.Tensor
    task: int

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> "Buffer":
        """The buffer on ``device``."""
        return Buffer(self.x.to(device), self.y.to(device), self.features.to(device), self.classes.to(device), self.task)

    def subset(self, index: torch.Tensor) -> "Buffer":
        """The samples at ``index``."""
        return Buffer(self.x[index], self.y[index], self.features[index], self.classes, self.task)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors of ``buffer.safetensors``."""
        return {"x": self.x, "y": self.y, "features": self.features, "classes": self.classes,
                "task": torch.tensor([self.task], dtype=torch.int64)}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "Buffer":
        """Rebuild a buffer from the tensors of ``buffer.safetensors``."""
        missing = {"x", "y", "features", "classes", "task"} - set(t)
        if missing:
            raise ValueError(f"buffer lacks tensor(s) {sorted(missing)}")
        return cls(t["x"], t["y"], t["features"], t["classes"], int(t["task"][0]))


def balanced_indices(y: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` indices drawn without replacement, spread as evenly as possible over the classes in ``y``."""
    y_cpu = y.cpu()
    classes = torch.unique(y_cpu)
    pools = [torch.nonzero(y_cpu == c).flatten() for c in classes]
    pools = [p[torch.randperm(len(p), generator=generator)] for p in pools]
    quota = [0] * len(pools)
    left = min(n, len(y_cpu))
    # Hand out the budget one round at a time so small classes give their spare quota to larger ones.
    while left > 0:
        open_ = [i for i, p in enumerate(pools) if quota[i] < len(p)]
        share = max(1, left // len(open_))
        for i in open_:
            take = min(share, len(pools[i]) - quota[i], left)
            quota[i] += take
            left -= take
            if left == 0:
                break
    picked = torch.cat([p[:q] for p, q in zip(pools, quota)]) if pools else torch.empty(0, dtype=torch.long)
    return picked.sort().values.to(y.device)


@torch.no_grad()
def build_buffer(expert: nn.Module, split: Split, classes: Sequence[int], task: int, fraction: float, cap: int,
                 generator: torch.Generator, batch_size: int = 1024) -> Buffer:
    """Sample ``min(cap, round(fraction * len(split)))`` class-balanced training samples and record the
    expert's features on them (eval mode)."""
    n = max(1, min(cap, round(fraction * len(split))))
    idx = balanced_indices(split.y, n, generator)
    x, y = split.x[idx], split.y[idx]
    was_training = expert.training
    expert.eval()
    feats = torch.cat([features(expert, x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)])
    expert.train(was_training)
    return Buffer(x, y, feats, torch.tensor(list(classes), dtype=torch.int64, device=y.device), task)


def resize(buffer: Buffer, n: int, generator: torch.Generator) -> Buffer:
    """The buffer cut to at most ``n`` samples, keeping the classes balanced."""
    if len(buffer) <= n:
        return buffer
    return buffer.subset(balanced_indices(buffer.y, n, generator))


def equal_share(buffers: list[Buffer], total: int, generator: torch.Generator) -> list[Buffer]:
    """Every buffer cut to an equal share of ``total`` samples (BMC's memory rule)."""
    if not buffers:
        return []
    share = max(1, total // len(buffers))
    return [resize(b, share, generator) for b in buffers]
