"""Residual MLP over precomputed feature vectors (BMC's backbone on the Stream benchmark's 768-d CLIP
features)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .factory import register_model
from .nets import _Classifier


class ResidualMLPBlock(nn.Module):
    """Pre-norm residual block: ``x + Linear(GELU(Linear(LayerNorm(x))))`` with optional dropout."""

    def __init__(self, dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.fc2(self.drop(self.act(self.fc1(self.norm(x))))))


@register_model
def resmlp(num_classes: int = 10, in_features: int = 768, hidden: int = 512, depth: int = 2,
           dropout: float = 0.0) -> nn.Module:
    """Residual MLP for feature streams: flatten, project ``in_features`` -> ``hidden``, ``depth`` residual
    blocks (LayerNorm -> Linear -> GELU -> Linear, plus skip), final LayerNorm; ``hidden``-d features."""
    body = nn.Sequential(OrderedDict(
        flatten=nn.Flatten(),
        proj=nn.Linear(in_features, hidden),
        blocks=nn.Sequential(*[ResidualMLPBlock(hidden, dropout) for _ in range(depth)]),
        norm=nn.LayerNorm(hidden)))
    return _Classifier(body, hidden, num_classes)
