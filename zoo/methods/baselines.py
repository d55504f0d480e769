"""The baselines every benchmark reports: finetune (lower bound), joint (upper bound) and replay (ER)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..buffer import balanced_indices
from ..data import Split
from ..schema import bounded
from ..train import fit
from .base import NoParams, SingleModelMethod, register_method


class _SingleModel(SingleModelMethod):
    """A baseline that carries one model from stage to stage."""

    def _loss_classes(self, t: int, which: str) -> list[int] | None:
        if which == "all":
            return None
        if which == "task":
            return list(self.ctx.stream.tasks[t].classes)
        return self.ctx.stream.seen_classes(t)


@dataclass
class FinetuneParams:
    """Finetune: ``loss_classes`` = classes the cross-entropy covers (seen so far, the task's, or all)."""

    loss_classes: Literal["seen", "task", "all"] = "seen"


@register_method("finetune")
class Finetune(_SingleModel):
    """Sequential training on each task in turn, nothing to prevent forgetting: the lower bound."""

    Params = FinetuneParams

    def train_stage(self, t: int) -> dict[str, Any]:
        task = self.ctx.stream.tasks[t]
        r = fit(self.model, task.train, task.val, self.ctx.training, num_classes=self.ctx.stream.num_classes,
                classes=self._loss_classes(t, self.params.loss_classes), generator=self._gen(t),
                desc=f"finetune task {t}", progress=self.ctx.progress)
        return {"epochs": r.epochs_run, "val_accuracy": r.val_accuracy}

    def _gen(self, t: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.ctx.seed * 1000 + t)


@register_method("joint")
class Joint(_SingleModel):
    """At stage t a fresh model is trained on all data of tasks 0..t together: the upper bound."""

    Params = NoParams

    def __init__(self, params: Any, ctx: Any):
        super().__init__(params, ctx)
        self.kept: tuple[int, int] = (0, 0)  # samples and bytes of the data joint training keeps

    def train_stage(self, t: int) -> dict[str, Any]:
        joint = self.ctx.stream.joint(t)
        torch.manual_seed(self.ctx.seed)
        self.model = self.ctx.new_model()
        r = fit(self.model, joint.train, joint.val, self.ctx.training,
                num_classes=self.ctx.stream.num_classes, classes=joint.classes,
                generator=torch.Generator().manual_seed(self.ctx.seed * 1000 + t),
                desc=f"joint tasks 0-{t}", progress=self.ctx.progress)
        self.kept = (len(joint.train), joint.train.x.element_size() * joint.train.x.numel())
        return {"epochs": r.epochs_run, "val_accuracy": r.val_accuracy}

    def memory(self) -> dict[str, Any]:
        """Joint training keeps every training sample of the tasks seen so far."""
        return {"exemplars": self.kept[0], "bytes": self.kept[1], "all_data": True}

    def load_state(self, tensors: dict[str, torch.Tensor], t: int) -> None:
        super().load_state(tensors, t)
        train = self.ctx.stream.joint(t).train
        self.kept = (len(train), train.x.element_size() * train.x.numel())


@dataclass
class ReplayParams:
    """Experience replay: a reservoir memory of ``memory_size`` samples; each minibatch is joined by
    ``replay_batch_size`` memory samples (default: the training batch size). When validation steers
    training (early stopping, ``restore_best``, plateau), a class-balanced ``val_fraction`` of the memory is
    held out of replay and validates beside the task's own validation split."""

    memory_size: int = bounded(200, ge=0)
    replay_batch_size: int | None = bounded(None, ge=1)
    loss_classes: Literal["seen", "task", "all"] = "seen"
    val_fraction: float = bounded(0.1, ge=0, lt=1)


class Reservoir:
    """A fixed-size reservoir sample over every training sample the stream has shown so far."""

    def __init__(self, capacity: int, seed: int):
        self.capacity = capacity
        self.seen = 0
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return 0 if self.y is None else len(self.y)

    def update(self, split: Split) -> None:
        """Offer every sample of ``split`` (in random order) to the reservoir (Vitter's algorithm R)."""
        n = len(split)
        if n == 0 or self.capacity == 0:
            return
        order = self.rng.permutation(n)
        counts = self.seen + 1 + np.arange(n)  # 1-based position of each sample in the whole stream
        slots = self.rng.integers(0, counts)
        fill = max(0, min(self.capacity - len(self), n))
        slots[:fill] = len(self) + np.arange(fill)  # while not full, every sample is kept
        keep = slots < self.capacity
        # Later samples overwrite earlier ones in the same slot: keep the last writer of each slot.
        slot_ids, last = np.unique(slots[keep][::-1], return_index=True)
        chosen = order[np.flatnonzero(keep)[::-1][last]]
        size = max(len(self), int(slot_ids.max()) + 1)
        x_new, y_new = split.x[torch.as_tensor(chosen, device=split.x.device)], split.y[torch.as_tensor(chosen, device=split.y.device)]
        if self.x is None:
            self.x = torch.empty((size, *split.x.shape[1:]), dtype=split.x.dtype, device=split.x.device)
            self.y = torch.empty(size, dtype=split.y.dtype, device=split.y.device)
        elif size > len(self):
            self.x = torch.cat([self.x, self.x.new_empty((size - len(self), *self.x.shape[1:]))])
            self.y = torch.cat([self.y, self.y.new_empty(size - len(self.y))])
        idx = torch.as_tensor(slot_ids, device=self.x.device)
        self.x[idx] = x_new
        self.y[idx] = y_new
        self.seen += n

    def sample(self, k: int, generator: torch.Generator,
               pool: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` memory samples drawn uniformly with replacement (from the indices ``pool`` when given)."""
        n = len(self) if pool is None else len(pool)
        idx = torch.randint(0, n, (k,), generator=generator).to(self.x.device)
        if pool is not None:
            idx = pool[idx]
        return self.x[idx], self.y[idx]

    def hold_out(self, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Split the memory's indices into (replayed, held out for validation): a class-balanced
        ``fraction`` is held out, at least one sample stays replayed."""
        n = len(self)
        held = balanced_indices(self.y, min(int(round(fraction * n)), n - 1), generator) if n else self.y.new_empty(0)
        keep = torch.ones(n, dtype=torch.bool, device=self.y.device)
        keep[held] = False
        return torch.nonzero(keep).flatten(), held


@register_method("replay")
class Replay(_SingleModel):
    """Experience replay (ER) with a reservoir memory of a stated size."""

    Params = ReplayParams
    memory_param = "memory_size"

    def __init__(self, params: ReplayParams, ctx: Any):
        super().__init__(params, ctx)
        self.memory_buffer = Reservoir(params.memory_size, ctx.seed)

    def train_stage(self, t: int) -> dict[str, Any]:
        task = self.ctx.stream.tasks[t]
        gen = torch.Generator().manual_seed(self.ctx.seed * 1000 + t)
        k = self.params.replay_batch_size or self.ctx.training.batch_size
        mem = self.memory_buffer
        pool, val = None, task.val
        if self.ctx.training.validates and len(mem) > 1:
            # Validation must cover every class replay may use, not only the new task's (ALGORITHMS.md §0).
            pool, held = mem.hold_out(self.params.val_fraction, torch.Generator().manual_seed(self.ctx.seed * 1000 + t))
            val = Split.concat([task.val, Split(mem.x[held], mem.y[held])])

        def mix(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if len(mem) == 0:
                return xb, yb
            mx, my = mem.sample(k, gen, pool)
            return torch.cat([xb, mx]), torch.cat([yb, my])

        r = fit(self.model, task.train, val, self.ctx.training, num_classes=self.ctx.stream.num_classes,
                classes=self._loss_classes(t, self.params.loss_classes), batch_hook=mix, generator=gen,
                desc=f"replay task {t}", progress=self.ctx.progress)
        # Seeded per stage, so a run resumed from a checkpoint samples exactly what an uninterrupted one does.
        mem.rng = np.random.default_rng([self.ctx.seed, t])
        mem.update(task.train)
        return {"epochs": r.epochs_run, "val_accuracy": r.val_accuracy, "memory": len(mem)}

    def memory(self) -> dict[str, int]:
        mem = self.memory_buffer
        return {"exemplars": len(mem), "bytes": 0 if mem.x is None else mem.x.element_size() * mem.x.numel()}

    def state(self) -> dict[str, torch.Tensor]:
        out = super().state()
        if len(self.memory_buffer):
            out["memory.x"] = self.memory_buffer.x
            out["memory.y"] = self.memory_buffer.y
        out["memory.seen"] = torch.tensor([self.memory_buffer.seen])
        return out

    def load_state(self, tensors: dict[str, torch.Tensor], t: int) -> None:
        super().load_state(tensors, t)
        device = self.ctx.device
        if "memory.x" in tensors:
            self.memory_buffer.x = tensors["memory.x"].to(device)
            self.memory_buffer.y = tensors["memory.y"].to(device)
        self.memory_buffer.seen = int(tensors["memory.seen"][0])
