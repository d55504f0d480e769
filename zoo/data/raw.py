"""RawDataset: one dataset as loaded from disk, before it is cut into tasks.

Images stay in their compact stored form (uint8, NCHW) until a task is assembled, so that building a stream
never holds two float32 copies of a large dataset; ``normalise`` turns a selection into float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class RawDataset:
    """Train and test arrays of one dataset plus what is needed to normalise and describe them.

    ``train_x``/``test_x`` are uint8 images (N, C, H, W) or float features (N, D); labels are int64 global
    class ids. A sample's float value is ``(x / scale - mean[c]) / std[c]`` (no mean/std: ``x / scale``).
    Optional extras: CIFAR-100 coarse labels, per-sample task ids (feature streams) and names.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    scale: float = 255.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: list[str] | None = None
    train_coarse: torch.Tensor | None = None
    test_coarse: torch.Tensor | None = None
    coarse_names: list[str] | None = None
    train_tasks: torch.Tensor | None = None
    test_tasks: torch.Tensor | None = None
    task_names: list[str] | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        """Whether samples are images (N, C, H, W), which rotation and the natural image form need."""
        return self.train_x.dim() == 4

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one stored sample: (C, H, W) for images, (D,) for feature vectors."""
        return tuple(self.train_x.shape[1:])

    def normalisation(self) -> dict[str, Any]:
        """A JSON-ready description of ``normalise``, recorded in every stream so runs can be reproduced."""
        out: dict[str, Any] = {"scale": self.scale}
        if self.mean is not None and self.std is not None:
            out["mean"] = list(self.mean)
            out["std"] = list(self.std)
        out["formula"] = "(x / scale - mean) / std" if self.mean is not None else "x / scale"
        return out

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Turn stored samples (any dtype, any leading selection) into normalised float32.

        Works in place on the fresh float copy so that a selection costs one float32 buffer, not three.
        """
        out = x.to(torch.float32, copy=True)
        if self.scale != 1.0:
            out.div_(self.scale)
        if self.mean is not None and self.std is not None:
            shape = (1, len(self.mean)) + (1,) * (out.dim() - 2)
            out.sub_(torch.tensor(self.mean, dtype=torch.float32).view(shape))
            out.div_(torch.tensor(self.std, dtype=torch.float32).view(shape))
        return out

    def background(self) -> list[float]:
        """The normalised value of a black (zero) pixel per channel: the fill for rotated image corners."""
        channels = self.train_x.shape[1] if self.is_image else 1
        if self.mean is None or self.std is None:
            return [0.0] * channels
        return [-m / s for m, s in zip(self.mean, self.std)]
