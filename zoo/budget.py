"""Memory accounting (MEMO): models and exemplars measured in one currency.

A model costs its parameter count × 4 bytes (float32); one exemplar costs what one raw input takes to store
(H·W·C bytes for uint8 images; D × 4 bytes for float feature vectors). Every run states its memory in bytes
and in exemplar equivalents, so methods can be compared at equal memory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from torch import nn

from .schema import RecipeError, bounded


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


# --- MEMO's memory-aligned budgets ------------------------------------------------------------------------------

@dataclass
class ModelCost:
    """An architecture's parameter counts: all of them, the backbone (without the head), the head, and MEMO's
    generalized / specialized split of the backbone (None where the architecture declares no split)."""

    architecture: str
    parameters: int
    backbone: int
    head: int
    generalized: int | None
    specialized: int | None


def model_cost(architecture: str, num_classes: int, **model_args: Any) -> ModelCost:
    """Count an architecture's parameters (built on the CPU, weights never loaded)."""
    from .models import create_model, specialized_prefixes

    model = create_model(architecture, num_classes, **model_args)
    total = parameter_count(model)
    head = head_parameter_count(model)
    prefixes = specialized_prefixes(architecture, model_args) or None
    specialized = None
    if prefixes is not None:
        specialized = sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes))
    return ModelCost(architecture, total, total - head, head,
                     None if specialized is None else total - head - specialized, specialized)


def aligned_budgets(cost: ModelCost, tasks: int, exemplar_bytes: int, base_exemplars: int = 2000) -> dict[str, Any]:
    """MEMO's memory-aligned exemplar budgets against DER (``base_exemplars`` + ``tasks`` backbones), with a
    model costing 4 bytes a parameter and an exemplar ``exemplar_bytes`` (ALGORITHMS.md §5): a single-backbone
    method gets B + ⌊(T−1)·m⌋ with m = P·4 / e, MEMO gets B + ⌊(T·P − (P_g + T·P_s))·4 / e⌋. Computed with
    P the backbone (MEMO's and PyCIL's convention) and, for reference, with the head counted too."""
    def per_model(p: int) -> float:
        return p * 4 / exemplar_bytes

    out: dict[str, Any] = {
        "tasks": tasks, "base_exemplars": base_exemplars, "exemplar_bytes": exemplar_bytes,
        "model_in_exemplars": {"backbone": per_model(cost.backbone), "with_head": per_model(cost.parameters)},
        "der": {"exemplars": base_exemplars, "backbones": tasks,
                "bytes": base_exemplars * exemplar_bytes + tasks * cost.backbone * 4},
        "single_backbone": {"backbone": base_exemplars + math.floor((tasks - 1) * cost.backbone * 4 / exemplar_bytes),
                            "with_head": base_exemplars + math.floor((tasks - 1) * cost.parameters * 4 / exemplar_bytes)},
    }
    if cost.specialized is not None:
        extra = tasks * cost.backbone - (cost.generalized + tasks * cost.specialized)
        out["memo"] = {"exemplars": base_exemplars + math.floor(extra * 4 / exemplar_bytes),
                       "generalized": cost.generalized, "specialized": cost.specialized}
    return out


def budget_report(architecture: str, input_shape: Any, num_classes: int, tasks: int, base_exemplars: int = 2000,
                  **model_args: Any) -> dict[str, Any]:
    """Everything ``zoo budget`` prints: the parameter counts and the aligned budgets for one stream."""
    e = 1
    for d in input_shape:
        e *= int(d)
    cost = model_cost(architecture, num_classes, **model_args)
    return {"architecture": architecture, "model_args": dict(model_args), "input_shape": list(input_shape),
            "num_classes": num_classes, "parameters": asdict(cost),
            **aligned_budgets(cost, tasks, e, base_exemplars)}


# --- a recipe's memory budget ----------------------------------------------------------------------------------

@dataclass
class BudgetSpec:
    """A recipe's ``budget:``: the total memory every method that keeps exemplars gets, from which each
    method's exemplar count is derived from its own model cost.

    Give exactly one of ``exemplars`` (a reference: that many exemplars plus ``backbones`` models of the
    recipe's architecture; ``backbones`` defaults to one per task, DER's memory at the end of the stream:
    "2,000 exemplars + T backbones"), ``bytes`` or ``megabytes`` (10^6 bytes). ``convention`` says whether a
    model's head counts (``with_head``) or not (``backbone``: MEMO's and PyCIL's convention). ``sweep`` lists
    other values of the same quantity for a budget sweep (``zoo run --budgets`` overrides it).
    """

    exemplars: int | None = bounded(None, ge=0)
    backbones: int | None = bounded(None, ge=0)
    bytes: int | None = bounded(None, ge=1)
    megabytes: float | None = bounded(None, gt=0)
    convention: Literal["backbone", "with_head"] = "backbone"
    sweep: list[int | float] = field(default_factory=list)

    def __post_init__(self) -> None:
        given = [k for k in ("exemplars", "bytes", "megabytes") if getattr(self, k) is not None]
        if len(given) != 1:
            raise RecipeError("recipe: budget: give exactly one of exemplars (with backbones), bytes or megabytes"
                              + (f" (got {', '.join(given)})" if given else ""))
        if self.backbones is not None and self.exemplars is None:
            raise RecipeError("recipe: budget.backbones goes with budget.exemplars (the reference memory)")
        for i, v in enumerate(self.sweep):
            self.check_value(v, f"budget.sweep[{i}]")

    @property
    def form(self) -> str:
        """Which quantity the budget is given in: exemplars, bytes or megabytes."""
        return next(k for k in ("exemplars", "bytes", "megabytes") if getattr(self, k) is not None)

    @property
    def value(self) -> float:
        """The budget's value in its own quantity."""
        return getattr(self, self.form)

    def check_value(self, v: Any, where: str) -> float:
        """A value of the budget's quantity (a sweep point): whole and >= 0 for exemplars, >= 1 byte, > 0 MB."""
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or math.isinf(v):
            raise RecipeError(f"recipe: {where} must be a number, got {v!r}")
        if self.form == "megabytes":
            if v <= 0:
                raise RecipeError(f"recipe: {where} must be > 0 megabytes, got {v!r}")
            return float(v)
        if v != int(v) or v < (0 if self.form == "exemplars" else 1):
            raise RecipeError(f"recipe: {where} must be a whole number of {self.form} "
                              f"{'>= 0' if self.form == 'exemplars' else '>= 1'}, got {v!r}")
        return int(v)

    def with_value(self, v: float) -> "BudgetSpec":
        """The same budget at another value of its quantity (one point of a sweep)."""
        return BudgetSpec(**{**asdict(self), self.form: self.check_value(v, "budget"), "sweep": []})


def _charged(models: list[nn.Module], convention: str) -> int:
    params = sum(parameter_count(m) for m in models)
    return params if convention == "with_head" else params - sum(head_parameter_count(m) for m in models)


def plan_budget(budget: BudgetSpec, recipe: Any, stream: Any) -> dict[str, Any]:
    """Each method's exemplar count under ``budget``: (total bytes − its models' bytes) // bytes per
    exemplar, with its models as they stand after the last task (:meth:`Method.budget_models`). Returns the
    derivation that ``results.json`` states; raises RecipeError when a method's models alone exceed it."""
    from .methods import get_method
    from .models import create_model

    e = exemplar_bytes(stream)
    tasks, classes = len(stream.tasks), stream.num_classes
    arch, args = recipe.model.architecture, dict(recipe.model.args)
    reference: dict[str, Any] = {"form": budget.form, "value": budget.value, "convention": budget.convention}
    if budget.form == "exemplars":
        backbones = tasks if budget.backbones is None else budget.backbones
        per_model = _charged([create_model(arch, classes, **args)], budget.convention)
        total = budget.exemplars * e + backbones * per_model * 4
        reference.update(exemplars=budget.exemplars, backbones=backbones, parameters_per_backbone=per_model,
                         text=f"{budget.exemplars:,} exemplars + {backbones} x {arch} ({per_model:,} parameters)")
    else:
        total = budget.bytes if budget.form == "bytes" else int(budget.megabytes * 1e6)
        reference["text"] = f"{total:,} bytes"
    methods: dict[str, Any] = {}
    for spec in recipe.methods:
        cls = get_method(spec.method)
        if cls.memory_param is None:
            methods[spec.key] = {"applies": False,
                                 "why": f"{spec.method} keeps no exemplar memory the budget could size"}
            continue
        n = _charged(cls.budget_models(arch, args, classes, tasks, spec.params), budget.convention)
        left = total - 4 * n
        if left < 0:
            raise RecipeError(f"recipe: budget: {spec.key}'s models alone take {4 * n:,} bytes, more than the "
                              f"budget of {total:,} bytes")
        k = left // e
        methods[spec.key] = {
            "applies": True, "parameter": cls.memory_param, "model_parameters": n, "model_bytes": 4 * n,
            "exemplars": k, "exemplar_bytes": k * e, "total_bytes": 4 * n + k * e,
            "derivation": f"floor(({total:,} - {4 * n:,}) / {e}) = {k:,} exemplars"}
    return {"total_bytes": total, "megabytes": total / 1e6, "bytes_per_exemplar": e, "tasks": tasks,
            "reference": reference, "methods": methods}
