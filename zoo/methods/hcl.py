"""HCL — Heterogeneous Continual Learning with Quick Deep Inversion (Madaan et al., CVPR 2023).

The architecture may change between tasks (the recipe's ``model`` is an architecture stream). On a change
the student is a **freshly initialised** model of the new architecture and the previous stage's model (its
selected weights) is the teacher; without a change the student keeps training, with a frozen copy of
itself as the teacher. Variants (ALGORITHMS.md §4):

- ``finetune``: label-smoothed CE on the current task, no transfer;
- ``distil``: + α·KL(softmax(t(x)/T) ‖ softmax(s(x)/T))·T² over all logits on the current data;
- ``distilbuf``: distil + a reservoir of real images (``buffer_size`` [200]) with an extra
  ``buffer_weight`` [0.3]·LS-CE on it;
- ``qdi``: distil + the same KD term on a synthetic set made once per task by Quick Deep Inversion of the
  teacher (:func:`zoo.synthetic.quick_deep_inversion`), forwarded every step. The set is saved with the
  stage's model as its buffer, so the run is inspectable and resumable.

Training follows the run's protocol (configured epochs, last weights; validation on the current task's
held-out data, which is all a data-free student may use, when early stopping is on).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..schema import bounded
from ..synthetic import QDIConfig, quick_deep_inversion
from ..train import fit
from .base import SingleModelMethod, register_method, test_metrics
from .baselines import Reservoir


@dataclass
class HCLParams:
    """HCL's parameters; bracketed defaults of ALGORITHMS.md §4 (α = 3 on CIFAR-100)."""

    variant: Literal["finetune", "distil", "distilbuf", "qdi"] = "qdi"
    label_smoothing: float = bounded(0.1, ge=0, lt=1)
    alpha: float = bounded(1.0, ge=0)
    temperature: float = bounded(1.0, gt=0)
    buffer_size: int = bounded(200, ge=1)
    buffer_weight: float = bounded(0.3, ge=0)
    qdi: QDIConfig = field(default_factory=QDIConfig)


def kd_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T))·T² over all logits, batch mean (a proper log-softmax)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits.float() / t, 1), F.softmax(teacher_logits.float() / t, 1),
                    reduction="batchmean") * t * t


def learn_task(student: nn.Module, teacher: nn.Module | None, task: Any, seen_classes: list[int],
               prev_classes: list[int], params: HCLParams, training: Any, num_classes: int,
               generator: torch.Generator, reservoir: Reservoir | None = None,
               progress: bool = False) -> tuple[Any, tuple[torch.Tensor, torch.Tensor] | None, dict[str, Any]]:
    """One HCL stage: ``student`` (in place) learns ``task`` with label-smoothed CE over ``seen_classes``,
    plus, by variant, KD from ``teacher`` on the current data, on a Quick Deep Inversion set of the teacher's
    ``prev_classes`` (``qdi``), and CE on ``reservoir`` samples (``distilbuf``). Returns the fit result, the
    synthetic set (or None) and facts for the log."""
    p = params
    synthetic = None
    facts: dict[str, Any] = {}
    if p.variant == "qdi" and teacher is not None and prev_classes:
        x, y, prior = quick_deep_inversion(teacher, task.train.x, prev_classes, p.qdi, generator)
        synthetic = (x, y)
        facts["qdi"] = {"samples": len(y), "r_feat": prior.mode}
    use_teacher = teacher if p.variant != "finetune" else None
    synthetic_targets = None
    if synthetic is not None and use_teacher is not None:
        with torch.no_grad():  # the teacher is frozen: its answers on the fixed synthetic set are computed once
            synthetic_targets = use_teacher(synthetic[0])

    def extra(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        loss = logits.new_zeros(())
        if use_teacher is not None:
            with torch.no_grad():
                t_logits = use_teacher(xb)
            loss = loss + p.alpha * kd_term(logits, t_logits, p.temperature)
            if synthetic_targets is not None:
                loss = loss + p.alpha * kd_term(model(synthetic[0]), synthetic_targets, p.temperature)
        if reservoir is not None and len(reservoir):
            mx, my = reservoir.sample(len(yb), generator)
            loss = loss + p.buffer_weight * F.cross_entropy(model(mx).float(), my, label_smoothing=p.label_smoothing)
        return loss
    cfg = dataclasses.replace(training, label_smoothing=p.label_smoothing)  # HCL's LS-CE
    needs_extra = use_teacher is not None or (reservoir is not None and len(reservoir) > 0)
    r = fit(student, task.train, task.val, cfg, num_classes=num_classes, classes=seen_classes,
            extra_loss=extra if needs_extra else None,
            generator=generator, desc=f"hcl {p.variant} task {task.id}", progress=progress)
    return r, synthetic, facts


@register_method("hcl")
class HCL(SingleModelMethod):
    """Heterogeneous continual learning (see module docstring)."""

    Params = HCLParams
    changes_architecture = True

    def __init__(self, params: HCLParams, ctx: Any):
        torch.manual_seed(ctx.seed)
        super().__init__(params, ctx)  # the model of task 0's architecture
        self.synthetic: tuple[torch.Tensor, torch.Tensor] | None = None
        self.reservoir = Reservoir(params.buffer_size, ctx.seed) if params.variant == "distilbuf" else None
        self.teacher_info: dict[str, Any] = {}

    def _fresh(self, t: int) -> nn.Module:
        torch.manual_seed(self.ctx.seed * 1000 + t)
        return self.ctx.model_for(t)

    def train_stage(self, t: int) -> dict[str, Any]:
        ctx, p = self.ctx, self.params
        stream = ctx.stream
        task = stream.tasks[t]
        changed = t > 0 and ctx.arch_key(t) != ctx.arch_key(t - 1)
        teacher = copy.deepcopy(self.model).eval().requires_grad_(False) if t > 0 and p.variant != "finetune" else None
        if changed:
            self.model = self._fresh(t)  # the new architecture starts from fresh weights, never the teacher's
        gen = torch.Generator().manual_seed(ctx.seed * 1000 + t)
        info: dict[str, Any] = {"architecture": ctx.arch_key(t), "changed": changed,
                                "teacher": ctx.arch_key(t - 1) if teacher is not None else None}
        r, self.synthetic, facts = learn_task(self.model, teacher, task, stream.seen_classes(t),
                                              stream.seen_classes(t - 1) if t > 0 else [], p, ctx.training,
                                              stream.num_classes, gen, self.reservoir, progress=ctx.progress)
        if self.reservoir is not None:
            self.reservoir.rng = np.random.default_rng([ctx.seed, t])
            self.reservoir.update(task.train)
        return {**info, **facts, "epochs": r.epochs_run, "val_accuracy": r.val_accuracy}

    # --- evaluation, checkpoints, registry -----------------------------------------------------------------

    def state(self) -> dict[str, torch.Tensor]:
        out = super().state()
        if self.synthetic is not None:
            out["synthetic.x"], out["synthetic.y"] = self.synthetic
        if self.reservoir is not None and len(self.reservoir):
            out["memory.x"], out["memory.y"] = self.reservoir.x, self.reservoir.y
            out["memory.seen"] = torch.tensor([self.reservoir.seen])
        return out

    def load_state(self, tensors: dict[str, torch.Tensor], t: int) -> None:
        self.model = self.ctx.model_for(t)  # the architecture of the stage being restored
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.synthetic = (tensors["synthetic.x"], tensors["synthetic.y"]) if "synthetic.x" in tensors else None
        if self.reservoir is not None and "memory.x" in tensors:
            self.reservoir.x, self.reservoir.y = tensors["memory.x"], tensors["memory.y"]
            self.reservoir.seen = int(tensors["memory.seen"][0])

    def memory(self) -> dict[str, Any]:
        if self.reservoir is None or not len(self.reservoir):
            return {"exemplars": 0, "bytes": 0}
        return {"exemplars": len(self.reservoir), "bytes": self.reservoir.x.element_size() * self.reservoir.x.numel()}

    def publish(self, t: int, publish: Any, parent: Any, stage: dict[str, Any]) -> Any:
        """The stage's model (parent: the previous stage's, its teacher), with the QDI set as its buffer."""
        seen = self.ctx.stream.tasks[: t + 1]
        buffer = {"x": self.synthetic[0], "y": self.synthetic[1]} if self.synthetic is not None else None
        hyper = {"variant": self.params.variant, "architecture": self.ctx.arch_key(t),
                 **({"qdi": asdict(self.params.qdi)} if self.params.variant == "qdi" else {})}
        return publish(self.model, suffix=f"s{t}", tasks=[(k.id, k.classes) for k in seen],
                       parents=[parent] if parent else [], metrics=test_metrics(stage, t), hyperparameters=hyper,
                       buffer=buffer, buffer_info={"content": "qdi-synthetic-set"} if buffer else None)


def upgrade_from_registry(registry: Any, base_ref: str, student_arch: str, recipe: Any, task_index: int,
                          params: HCLParams, *, student_args: dict[str, Any] | None = None, name: str | None = None,
                          target: Any = None, device: str | None = None, seed: int = 0, progress: bool = True) -> Any:
    """Upgrade a registry model to a new architecture on one task of a recipe's stream (HCL): a fresh
    ``student_arch`` learns task ``task_index`` with the registry model as its teacher (``params.variant``:
    distil, or qdi for Quick Deep Inversion of what the teacher knew). The new base is written with the old
    one as its parent and every setting in its card; its classes are the teacher's plus the task's."""
    from registry.card import ParentRef, TaskSpec
    from registry.errors import ZooError, first_line

    from ..data import build_stream
    from ..models import create_model
    from ..train import prepare_model, resolve_device

    dev = resolve_device(device or recipe.device)
    stream = build_stream(recipe.stream).to(dev)
    if not 0 <= task_index < len(stream.tasks):
        raise ZooError(f"consolidate: the recipe's stream has no task {task_index} (it has {len(stream.tasks)})")
    task = stream.tasks[task_index]
    base_card = registry.card(base_ref)
    with registry.fetch([base_card]) as (base,):
        teacher = base.model(dev).eval()
    prev = sorted({c for t in base_card.tasks for c in t.classes})
    if any(c >= stream.num_classes for c in prev):
        raise ZooError(f"base {base_card.name} knows classes beyond the stream's {stream.num_classes}")
    torch.manual_seed(seed)
    student = prepare_model(create_model(student_arch, stream.num_classes, **(student_args or {})), dev)
    seen = prev + [c for c in task.classes if c not in set(prev)]
    try:
        r, synthetic, facts = learn_task(student, teacher, task, seen, prev, params, recipe.training, stream.num_classes,
                                         torch.Generator().manual_seed(seed), progress=progress)
    except RuntimeError as e:
        raise ZooError(f"base {base_card.name} or the {student_arch} student cannot take the recipe's inputs: "
                       f"{first_line(e)}") from None
    tasks = {t.id: t.classes for t in base_card.tasks}
    tasks[task.id] = tuple(task.classes)
    settings = {"method": f"hcl-{params.variant}", "base": base_card.id, "recipe": recipe.name, "task": task.id,
                "student_architecture": student_arch, "student_args": dict(student_args or {}), "seed": seed,
                "hcl": asdict(params), "training": asdict(recipe.training), **facts}
    buffer = {"x": synthetic[0], "y": synthetic[1]} if synthetic is not None else None
    dest = target if target is not None else registry
    return dest.save(student.cpu(), name=name or f"{base_card.name}-{student_arch}",
                     tasks=[TaskSpec(i, tuple(c)) for i, c in sorted(tasks.items())],
                     parents=[ParentRef(base_card.id, base_card.digest, "base")], method=f"hcl-{params.variant}",
                     hyperparameters={"recipe": settings}, seed=seed,
                     metrics={"val_accuracy": r.val_accuracy}, buffer=buffer,
                     buffer_info={"content": "qdi-synthetic-set"} if buffer else None, labels=list(base_card.labels))
