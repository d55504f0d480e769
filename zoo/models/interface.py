"""The interface every model zoo builds offers: penultimate features and the final linear head.

zoo's own nets expose ``features(x)`` and ``head``; timm models expose ``forward_features`` /
``forward_head(pre_logits=True)`` and ``get_classifier()``. These functions hide the difference.
"""

from __future__ import annotations

import torch
from torch import nn


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features φ(x) of any model built by :func:`create_model` (zoo net, timm net or multi-head)."""
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):  # timm's interface
        return model.forward_head(model.forward_features(x), pre_logits=True)
    return model.features(x)


def classifier_head(model: nn.Module) -> nn.Module:
    """The final linear layer of a single-head model (zoo's ``head`` or timm's ``get_classifier()``)."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    if hasattr(model, "head") and isinstance(model.head, nn.Module):
        return model.head
    raise TypeError(f"{type(model).__name__} has no single classifier head")


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """φ(x) and the logits W φ(x) from one backbone pass (distillation needs both)."""
    f = features(model, x)
    return f, classifier_head(model)(f)
