"""Batch augmentation on tensors, on whatever device they live (no PIL, no DataLoader workers).

One function serves training (``training.augment``), BMC's live-teacher consolidation and model inversion:
every operation is an index gather or a ``where``, so it is differentiable with respect to the inputs.

- ``crop_flip``: random crop with zero padding (4 pixels, the CIFAR convention) and a horizontal flip with
  probability 1/2, per sample
- ``flip``: the horizontal flip alone
- ``noise``: additive Gaussian noise (σ = 0.05 in normalised units), for feature vectors
- ``auto``: ``crop_flip`` for images (N, C, H, W), ``noise`` for anything else; ``none``: the input unchanged
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Augmentation = Literal["none", "auto", "crop_flip", "flip", "noise"]


def _flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def _crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]
    return padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


def augment(x: torch.Tensor, kind: str, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """``x`` augmented per sample as ``kind`` says (see the module docstring); randomness from ``generator``
    (a CPU generator, so runs are reproducible on any device)."""
    if kind == "auto":
        kind = "crop_flip" if x.dim() == 4 else "noise"
    if kind == "none":
        return x
    if kind == "noise":
        return x + 0.05 * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    if x.dim() != 4:
        raise ValueError(f"augment {kind!r} needs images (N, C, H, W), got a tensor of shape {tuple(x.shape)}")
    if kind == "flip":
        return _flip(x, generator).contiguous()
    if kind == "crop_flip":
        return _flip(_crop(x, pad, generator), generator).contiguous()
    raise ValueError(f"unknown augmentation {kind!r}")
