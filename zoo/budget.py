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


def head_parameter_count(model: nn.Module) -> int:
    """Parameters of the classifier head(s): the final linear layer, or every task head of a multi-head model
    (MEMO and PyCIL leave these out of a model's cost)."""
    from .models import MultiHeadNet, classifier_head

    if isinstance(model, MultiHeadNet):
        return sum(p.numel() for p in model.heads.parameters())
    try:
        return sum(p.numel() for p in classifier_head(model).parameters())
    except TypeError:  # no single head to tell apart: the whole model counts as backbone
        return 0


def memory_report(models: list[nn.Module], exemplars: int, stream: Any, stored_bytes: int = 0,
                  all_data: bool = False) -> dict[str, Any]:
    """What a method keeps, in two currencies.

    ``stored`` is what the run actually held: float32 parameters and the exemplar tensors as kept in memory
    (``stored_bytes``, e.g. float32 inputs plus BMC's features). ``memo`` is MEMO's convention: a parameter
    costs 4 bytes, an exemplar its raw uint8 pixels (:func:`exemplar_bytes`), with the head counted
    (``with_head``) and without it (``backbone``, as MEMO and PyCIL count); each total is also given in
    exemplar equivalents. ``all_data`` marks a method that keeps every training sample (joint).
    """
    per = exemplar_bytes(stream)
    params = sum(parameter_count(m) for m in models)
    backbone = params - sum(head_parameter_count(m) for m in models)
    buffer_bytes = exemplars * per

    def convention(n_params: int) -> dict[str, Any]:
        total = n_params * 4 + buffer_bytes
        return {"model_bytes": n_params * 4, "total_bytes": total, "exemplar_equivalents": total / per}

    return {
        "models": len(models),
        "model_parameters": params,
        "backbone_parameters": backbone,
        "exemplars": exemplars,
        "all_data": all_data,
        "stored": {"model_bytes": params * 4, "exemplar_bytes": stored_bytes, "total_bytes": params * 4 + stored_bytes},
        "memo": {"bytes_per_exemplar": per, "exemplar_bytes": buffer_bytes,
                 "with_head": convention(params), "backbone": convention(backbone)},
    }
