"""Task heads: a shared backbone with one linear head per task (Model Zoo's multi-head experts)."""

from __future__ import annotations

import torch
from torch import nn

from .interface import features


class MultiHeadNet(nn.Module):
    """A backbone (built with ``num_classes=0``, so it outputs features) and one linear head per task.

    ``forward(x)`` returns the heads' logits concatenated in head order; the expert card maps head ``i`` to
    its global task id. ``forward(x, head=i)`` returns head ``i`` alone.
    """

    def __init__(self, backbone: nn.Module, heads: list[int]):
        super().__init__()
        self.backbone = backbone
        dim = int(getattr(backbone, "num_features"))
        self.num_features = dim
        self.heads = nn.ModuleList(nn.Linear(dim, n) for n in heads)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Shared backbone features."""
        return features(self.backbone, x)

    def forward(self, x: torch.Tensor, head: int | None = None) -> torch.Tensor:
        f = self.features(x)
        if head is not None:
            return self.heads[head](f)
        return torch.cat([h(f) for h in self.heads], dim=1)
