"""MEMO (Zhou et al., ICLR 2023) and DER (Yan et al., CVPR 2021): one expandable model, two splits.

At task 0 the expandable model (:mod:`zoo.models.expandable`) holds one specialized block and trains with
cross-entropy over the task's classes. At every later task t (ALGORITHMS.md §5):

1. a new specialized block is added, **copied from the newest one**, and the head widens to the
   concatenated features (the old classes' rows on the old features are copied);
2. the older specialized blocks are frozen in eval mode (their BatchNorm statistics stay), and so are the
   generalized blocks unless ``train_base`` (MEMO's default: they keep training);
3. the model trains on the task's data plus the exemplar memory with
   L = CE(head(all features), y) + α_aux · CE(aux(newest block), ỹ), where the auxiliary head (fresh at every
   task, dropped afterwards) predicts the task's new classes and one "old" class (ỹ = 0 for old classes);
4. weight aligning rescales the new classes' head rows to the old rows' mean norm;
5. the memory is rebuilt under the fixed total budget ``memory_size``: every seen class gets
   ``memory_size // seen classes`` exemplars, old classes keep the first of theirs (herding order), new
   classes are picked by iCaRL herding on the model's normalised features, and a class with fewer samples
   keeps what it has (:mod:`zoo.herding`).

``der`` is the same code with every block specialized (a whole backbone per task); ``train_base`` has
nothing to act on there. Training runs the configured epochs (the reference protocol): early stopping
and ``restore_best`` are refused, because validation that steers training would need held-out memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Split
from ..herding import class_exemplars
from ..models import create_model, features
from ..schema import RecipeError, bounded, parse, to_data
from ..train import TrainConfig, fit, prepare_model
from .base import SingleModelMethod, register_method


@dataclass
class MemoParams:
    """MEMO / DER: ``memory_size`` exemplars in all (herding, split equally over the seen classes);
    ``train_base``: keep training the generalized blocks after task 0 (MEMO; no effect for DER);
    ``alpha_aux``: weight of the auxiliary loss; ``weight_aligning`` after each task after the first;
    ``first_task``: training overrides for task 0 (the reference trains it longer, e.g. ``{epochs: 200,
    milestones: [60, 120, 170]}``)."""

    memory_size: int = bounded(2000, ge=0)
    train_base: bool = True
    alpha_aux: float = bounded(1.0, ge=0)
    weight_aligning: bool = True
    first_task: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parse(TrainConfig, self.first_task, "first_task")  # unknown keys and bad values fail at parse time


class ExemplarMemory:
    """Exemplars per class, each class's in herding order (so a smaller quota keeps its first ones)."""

    def __init__(self) -> None:
        self.per_class: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return sum(len(x) for x in self.per_class.values())

    def split(self) -> Split | None:
        """Every exemplar as one split (None when empty)."""
        if not len(self):
            return None
        xs = [x for x in self.per_class.values()]
        ys = [torch.full((len(x),), c, dtype=torch.long, device=x.device) for c, x in self.per_class.items()]
        return Split(torch.cat(xs), torch.cat(ys))

    def reduce(self, quota: int) -> None:
        """Keep each class's first ``quota`` exemplars."""
        self.per_class = {c: x[:quota] for c, x in self.per_class.items()}

    def add(self, c: int, x: torch.Tensor) -> None:
        """Store class ``c``'s exemplars (in herding order)."""
        # Plain row-major strides, as a checkpoint restores them: with a size-1 channel dimension an indexed
        # copy can come out channels_last-strided, and convolution kernels then round differently, so a
        # resumed run would drift from an uninterrupted one.
        self.per_class[int(c)] = x.clone(memory_format=torch.contiguous_format)

    def nbytes(self) -> int:
        """Bytes the exemplars take as held."""
        return sum(x.element_size() * x.numel() for x in self.per_class.values())

    def tensors(self) -> dict[str, torch.Tensor]:
        """The memory as checkpoint tensors."""
        split = self.split()
        return {} if split is None else {"memory.x": split.x, "memory.y": split.y}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`tensors`'s output (class order and each class's herding order are kept)."""
        self.per_class = {}
        if "memory.x" in tensors:
            x, y = tensors["memory.x"], tensors["memory.y"]
            for c in dict.fromkeys(y.tolist()):
                self.per_class[int(c)] = x[y == c]


@register_method("memo")
class Memo(SingleModelMethod):
    """MEMO: shared generalized blocks and one specialized block per task (module docstring)."""

    Params = MemoParams
    split = "memo"
    memory_param = "memory_size"

    def __init__(self, params: MemoParams, ctx: Any):
        self.params, self.ctx = params, ctx
        if ctx.training.validates or self._training(0).validates:
            raise RecipeError(f"recipe: {self.name} trains the configured epochs, as the reference does: remove "
                              f"training.patience, restore_best and the plateau schedule for it")
        super().__init__(params, ctx)
        self.memory_buffer = ExemplarMemory()

    def initial_model(self) -> nn.Module:
        """The expandable model with one specialized block."""
        return self._build(1)

    @classmethod
    def budget_models(cls, architecture: str, model_args: dict[str, Any], num_classes: int, tasks: int,
                      params: Any) -> list[nn.Module]:
        """The models this method holds after ``tasks`` tasks: one expandable model with a block per task."""
        return [create_model("expandable", num_classes, base=architecture, base_args=dict(model_args),
                             blocks=tasks, split=cls.split)]

    def _training(self, t: int) -> TrainConfig:
        """Task ``t``'s training settings: the recipe's, with ``first_task`` applied to task 0."""
        if t > 0 or not self.params.first_task:
            return self.ctx.training
        return parse(TrainConfig, {**to_data(self.ctx.training), **self.params.first_task}, "first_task")

    def _build(self, blocks: int) -> nn.Module:
        model = create_model("expandable", self.ctx.stream.num_classes, base=self.ctx.architecture,
                             base_args=dict(self.ctx.model_args), blocks=blocks, split=self.split)
        return prepare_model(model, self.ctx.device, self.ctx.training)

    def train_stage(self, t: int) -> dict[str, Any]:
        stream, model = self.ctx.stream, self.model
        task = stream.tasks[t]
        old = stream.seen_classes(t - 1) if t > 0 else []
        # The new head and auxiliary head draw their initial weights here: seeded per stage, so a run
        # resumed from a checkpoint draws exactly what an uninterrupted one does.
        torch.manual_seed(self.ctx.seed * 1000 + t)
        if t > 0:
            model.add_block(old)
            model.freeze(blocks=t, generalized=not self.params.train_base)
        memory = self.memory_buffer.split()
        train = task.train if memory is None else Split.concat([task.train, memory])
        extra_loss, aux = None, None
        if t > 0 and self.params.alpha_aux > 0:
            extra_loss, aux = self._aux_loss(task.classes, old)
        gen = torch.Generator().manual_seed(self.ctx.seed * 1000 + t)
        try:
            r = fit(model, train, task.val, self._training(t), num_classes=stream.num_classes,
                    classes=stream.seen_classes(t), extra_loss=extra_loss, generator=gen,
                    desc=f"{self.name} task {t}", progress=self.ctx.progress)
        finally:
            if aux is not None:
                aux[1].remove()
                del model.aux  # training only: the saved model is the backbone and the head
        gamma = None
        if t > 0 and self.params.weight_aligning:
            gamma = model.weight_align(old, task.classes)
        kept = self._rebuild_memory(t)
        return {"epochs": r.epochs_run, "val_accuracy": r.val_accuracy, "blocks": len(model.specialized),
                "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "weight_align_gamma": gamma, "memory": len(self.memory_buffer), "exemplars_per_class": kept}

    def _aux_loss(self, new_classes: list[int], old_classes: list[int]) -> tuple[Any, Any]:
        """The auxiliary head on the newest block (attached to the model so ``fit`` optimises it) and the
        loss term that reads the newest block's features through a forward hook."""
        model = self.model
        model.aux = nn.Linear(model.block_features, len(new_classes) + 1).to(model.head.weight.device)
        # ỹ: 0 for every old class, 1..k for the task's classes in their order
        target = torch.zeros(self.ctx.stream.num_classes, dtype=torch.long, device=model.head.weight.device)
        target[torch.as_tensor(new_classes, device=target.device)] = torch.arange(
            1, len(new_classes) + 1, device=target.device)
        newest: dict[str, torch.Tensor] = {}
        hook = model.specialized[-1].register_forward_hook(lambda m, i, out: newest.__setitem__("f", out))
        alpha = self.params.alpha_aux

        def loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            return alpha * F.cross_entropy(m.aux(newest["f"]).float(), target[yb])

        return loss, (model.aux, hook)

    @torch.no_grad()
    def _rebuild_memory(self, t: int) -> dict[int, int]:
        """Cut old classes to the new quota; herd the task's classes on the current model's features."""
        stream, model = self.ctx.stream, self.model
        seen = stream.seen_classes(t)
        quota = self.params.memory_size // max(len(seen), 1)
        self.memory_buffer.reduce(quota)
        train = stream.tasks[t].train
        if quota > 0:
            model.eval()
            feats = torch.cat([features(model, train.x[i:i + self.ctx.training.eval_batch_size]).float()
                               for i in range(0, len(train), self.ctx.training.eval_batch_size)])
            for c in stream.tasks[t].classes:
                self.memory_buffer.add(c, train.x[class_exemplars(feats, train.y, c, quota)])
        return {c: len(x) for c, x in self.memory_buffer.per_class.items()}

    def memory(self) -> dict[str, Any]:
        return {"exemplars": len(self.memory_buffer), "bytes": self.memory_buffer.nbytes()}

    def state(self) -> dict[str, torch.Tensor]:
        return {**super().state(), **self.memory_buffer.tensors()}

    def load_state(self, tensors: dict[str, torch.Tensor], t: int) -> None:
        self.model = self._build(t + 1)  # the checkpoint of stage t holds t + 1 specialized blocks
        super().load_state(tensors, t)
        self.memory_buffer.load(tensors)


@register_method("der")
class Der(Memo):
    """DER: the expandable model with every block specialized, i.e. a whole new backbone per task."""

    split = "der"
