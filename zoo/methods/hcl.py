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

from ..metrics import Predictor
from ..schema import bounded
from ..synthetic import QDIConfig, quick_deep_inversion
from ..train import fit
from .base import Method, register_method, test_metrics
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


@register_method("hcl")
class HCL(Method):
    """Heterogeneous continual learning (see module docstring)."""

    Params = HCLParams
    changes_architecture = True

    def __init__(self, params: HCLParams, ctx: Any):
        super().__init__(params, ctx)
        torch.manual_seed(ctx.seed)
        self.model = ctx.model_for(0)
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
        self.synthetic = None
        if p.variant == "qdi" and teacher is not None:
            x, y, prior = quick_deep_inversion(teacher, task.train.x, stream.seen_classes(t - 1), p.qdi, gen)
            self.synthetic = (x, y)
            info["qdi"] = {"samples": len(y), "r_feat": prior.mode}
        extra = self._extra_loss(teacher, gen)
        training = dataclasses.replace(ctx.training, label_smoothing=p.label_smoothing)  # HCL's LS-CE
        r = fit(self.model, task.train, task.val, training, num_classes=stream.num_classes,
                classes=stream.seen_classes(t), extra_loss=extra, generator=gen, desc=f"hcl {p.variant} task {t}",
                progress=ctx.progress)
        if self.reservoir is not None:
            self.reservoir.rng = np.random.default_rng([ctx.seed, t])
            self.reservoir.update(task.train)
        return {**info, "epochs": r.epochs_run, "val_accuracy": r.val_accuracy}

    def _extra_loss(self, teacher: nn.Module | None, gen: torch.Generator) -> Any:
        p = self.params
        if teacher is None and self.reservoir is None:
            return None

        def extra(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            loss = logits.new_zeros(())
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(xb)
                loss = loss + p.alpha * kd_term(logits, t_logits, p.temperature)
                if self.synthetic is not None:
                    xs = self.synthetic[0]
                    with torch.no_grad():
                        ts = teacher(xs)
                    loss = loss + p.alpha * kd_term(model(xs), ts, p.temperature)
            if self.reservoir is not None and len(self.reservoir):
                mx, my = self.reservoir.sample(len(yb), gen)
                loss = loss + p.buffer_weight * F.cross_entropy(model(mx).float(), my, label_smoothing=p.label_smoothing)
            return loss
        return extra

    # --- evaluation, checkpoints, registry -----------------------------------------------------------------

    def predictor(self) -> Predictor:
        self.model.eval()
        return lambda x, task: self.model(x)

    def expert(self) -> nn.Module:
        return self.model

    def state(self) -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v for k, v in self.model.state_dict().items()}
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
