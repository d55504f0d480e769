"""Memory accounting (MEMO): models and exemplars measured in one currency.

A model costs its parameter count × 4 bytes (float32); one exemplar costs what one raw input takes to store
(H·W·C bytes for uint8 images; D × 4 bytes for float feature vectors). Every run states its memory in bytes
and in exemplar equivalents, so methods can be compared at equal memory.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def parameter_count(model: nn.Module) -> int:
    """Number of parameters (buffers such as BatchNorm statistics excluded, as in MEMO's accounting)."""
    return sum(p.numel() for p in model.parameters())


def exemplar_bytes(stream: Any) -> int:
    """Bytes one stored exemplar costs for this stream: uint8 pixels for images, float32 for features."""
    shape = tuple(stream.input_shape)
    size = 1
    for d in shape:
        size *= int(d)
    if getattr(stream, "dataset", "") == "features":
        return 4 * size
    return size  # images and digits are stored as 8-bit values


def memory_report(models: list[nn.Module], exemplars: int, stream: Any) -> dict[str, Any]:
    """Bytes and exemplar equivalents of what a method keeps: its models plus its stored exemplars."""
    per = exemplar_bytes(stream)
    model_bytes = sum(parameter_count(m) * 4 for m in models)
    buffer_bytes = exemplars * per
    total = model_bytes + buffer_bytes
    return {
        "models": len(models),
        "model_parameters": sum(parameter_count(m) for m in models),
        "model_bytes": model_bytes,
        "exemplars": exemplars,
        "exemplar_bytes": per,
        "buffer_bytes": buffer_bytes,
        "total_bytes": total,
        "exemplar_equivalents": total / per,
    }
