"""BMC's batched consolidation: one base model learns from a batch of experts at once, each on its own buffer.

For a sample x from buffer j the loss is CE(b(x), y) over the **seen** classes plus
λ_d·‖φ_b(x) − φ_{e_j}(x)‖² (mean squared error of penultimate features), where φ_{e_j} is the feature stored
by the expert that produced buffer j (``teacher: stored``), or, with ``teacher: live``, computed on the fly on
an augmented x by the K new experts run as **one batched forward** (parameters stacked with
``torch.func.stack_module_state``, features through ``torch.func.vmap``). Minibatches are task-balanced:
every buffer contributes the same number of samples to every minibatch (a stratified form of "pick a buffer
uniformly, then a sample"). AdamW, ReduceLROnPlateau and early stopping use a validation split carved from
each buffer; test data is never seen.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .augment import Augmentation, augment
from .buffer import Buffer, balanced_indices
from .schema import bounded
from .models import features, features_and_logits
from .train import EarlyStopping, autocast, class_mask, masked_logits, progress_bar


@dataclass
class ConsolidationConfig:
    """Settings of the consolidation phase. Defaults are the reference's: AdamW (lr 0.01, weight decay 0.01),
    100 epochs, batch 64, ReduceLROnPlateau (patience 10) on the validation loss of held-out buffer samples.
    As in the reference, the configured epochs run and the last weights are kept; ``patience`` turns on early
    stopping and ``restore_best`` keeps the best validation epoch (ties go to the later one)."""

    epochs: int = bounded(100, ge=1)
    batch_size: int = bounded(64, ge=1)
    lr: float = bounded(0.01, ge=0)
    weight_decay: float = bounded(0.01, ge=0)
    lambda_d: float = bounded(1.0, ge=0)
    teacher: Literal["stored", "live"] = "stored"
    teacher_batching: Literal["auto", "batched", "looped"] = "auto"
    augment: Augmentation = "auto"
    val_fraction: float = bounded(0.1, ge=0, lt=1)
    patience: int | None = bounded(None, ge=0)
    restore_best: bool = False
    plateau_patience: int = bounded(10, ge=0)
    plateau_factor: float = bounded(0.1, gt=0, le=1)
    steps_per_epoch: int | None = bounded(None, ge=1)
    amp: bool = True


@dataclass
class ConsolidationResult:
    """Best validation loss, the epoch it was reached, epochs run, the per-epoch history and the epoch whose
    weights were kept (the last one unless ``restore_best``)."""

    best_val_loss: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]
    kept_epoch: int = -1

    @property
    def kept(self) -> dict[str, float]:
        """The history entry of the kept weights (empty when no epoch ran)."""
        return self.history[self.kept_epoch] if self.history and self.kept_epoch >= 0 else {}


# --- the batched teacher ---------------------------------------------------------------------------------------

class _FeatureView(nn.Module):
    """A module whose forward is another module's ``features`` (so ``functional_call`` can run it)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return features(self.model, x)


class BatchedTeacher:
    """K same-architecture experts evaluated as one batched forward: stacked parameters + ``vmap``."""

    def __init__(self, experts: Sequence[nn.Module]):
        from torch.func import stack_module_state

        views = [_FeatureView(e.eval()) for e in experts]
        params, buffers = stack_module_state(views)
        # channels_last weights (convnets on CUDA) would send vmap to a slow per-expert fallback.
        self.params = {k: v.contiguous() for k, v in params.items()}
        self.buffers = {k: v.contiguous() for k, v in buffers.items()}
        for t in (*self.params.values(), *self.buffers.values()):
            t.requires_grad_(False)
        # A weightless copy of the architecture: functional_call supplies the stacked weights.
        self.template = copy.deepcopy(views[0]).to("meta")
        self.k = len(views)

    def _one(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        return functional_call(self.template, (params, buffers), (x,))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (K, n, ...) with row k for expert k; returns their features, (K, n, d)."""
        from torch.func import vmap

        return vmap(self._one)(self.params, self.buffers, x)


@torch.no_grad()
def looped_features(experts: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """The per-expert loop the batched teacher replaces: expert k on ``x[k]``, stacked to (K, n, d)."""
    return torch.stack([features(e.eval(), x[k]) for k, e in enumerate(experts)])


class LoopedTeacher:
    """The K experts run one after the other, behind the batched teacher's interface."""

    def __init__(self, experts: Sequence[nn.Module]):
        self.experts = [e.eval() for e in experts]
        self.k = len(self.experts)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return looped_features(self.experts, x)


def make_teacher(experts: Sequence[nn.Module], mode: str, device: torch.device) -> BatchedTeacher | LoopedTeacher:
    """The live teacher: batched (``vmap``) or looped. ``auto`` batches on CUDA from K = 2 and on the CPU from
    K = 8, where bench/consolidate.py measured vmap to pay (below that the loop is as fast or faster)."""
    k = len(experts)
    if mode == "auto":
        mode = "batched" if k >= (2 if device.type == "cuda" else 8) else "looped"
    return BatchedTeacher(experts) if mode == "batched" else LoopedTeacher(experts)


# --- consolidation ---------------------------------------------------------------------------------------------

def _split_validation(buffers: list[Buffer], fraction: float, generator: torch.Generator) -> tuple[list[Buffer], list[Buffer]]:
    train, val = [], []
    for b in buffers:
        n_val = int(round(fraction * len(b))) if len(b) >= 10 else 0
        idx = balanced_indices(b.y, n_val, generator) if n_val else torch.empty(0, dtype=torch.long, device=b.y.device)
        keep = torch.ones(len(b), dtype=torch.bool, device=b.y.device)
        keep[idx] = False
        train.append(b.subset(keep))
        val.append(b.subset(idx))
    return train, val


def _sample(buffers: list[Buffer], per: int, generator: torch.Generator) -> list[torch.Tensor]:
    return [torch.randint(0, len(b), (per,), generator=generator).to(b.y.device) for b in buffers]


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target_feats: torch.Tensor, mask: torch.Tensor,
          lambda_d: float) -> tuple[torch.Tensor, torch.Tensor]:
    f, logits = features_and_logits(model, x)
    ce = F.cross_entropy(masked_logits(logits.float(), mask), y)
    return ce + lambda_d * F.mse_loss(f.float(), target_feats.float()), logits


@torch.no_grad()
def _validate(model: nn.Module, val: list[Buffer], mask: torch.Tensor, lambda_d: float, device: torch.device,
              amp: bool) -> tuple[float, float]:
    model.eval()
    total, correct, n = 0.0, 0, 0
    for b in val:
        for i in range(0, len(b), 1024):
            x, y, t = b.x[i:i + 1024], b.y[i:i + 1024], b.features[i:i + 1024]
            with autocast(device, amp):
                loss, logits = _loss(model, x, y, t, mask, lambda_d)
            total += float(loss) * len(y)
            correct += int((masked_logits(logits.float(), mask).argmax(1) == y).sum())
            n += len(y)
    model.train()
    return (total / n, correct / n) if n else (float("nan"), float("nan"))


def consolidate(base: nn.Module, new_buffers: list[Buffer], memory: list[Buffer], cfg: ConsolidationConfig, *,
                seen_classes: Sequence[int], num_classes: int, experts: Sequence[nn.Module] | None = None,
                generator: torch.Generator | None = None, progress: bool = True) -> ConsolidationResult:
    """Train ``base`` in place on the new buffers and the memory with BMC's consolidation loss.

    ``experts`` (same order as ``new_buffers``) are required for ``teacher: live``; they are stacked into one
    batched forward. Returns the validation history; with ``restore_best`` the best epoch's weights are
    restored, otherwise the last epoch's are kept.
    """
    if cfg.teacher == "live" and (experts is None or len(experts) != len(new_buffers)):
        raise ValueError("teacher: live needs one expert per new buffer")
    generator = generator or torch.Generator().manual_seed(0)
    device = next(base.parameters()).device
    mask = class_mask(seen_classes, num_classes, device)
    all_buffers = [b.to(device) for b in (*new_buffers, *memory)]
    train, val = _split_validation(all_buffers, cfg.val_fraction, generator)
    k = len(new_buffers)
    teacher = make_teacher([e.to(device) for e in experts], cfg.teacher_batching, device) if cfg.teacher == "live" else None
    per = max(1, cfg.batch_size // len(train))
    steps = cfg.steps_per_epoch or max(1, math.ceil(sum(len(b) for b in train) / (per * len(train))))
    opt = torch.optim.AdamW(base.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.plateau_factor,
                                                       patience=cfg.plateau_patience)
    stopper = EarlyStopping("min", cfg.patience, cfg.restore_best)
    history: list[dict[str, float]] = []
    epoch = -1
    bar = progress_bar(cfg.epochs, "consolidate", progress)
    base.train()
    for epoch in range(cfg.epochs):
        running = torch.zeros((), device=device)  # summed on the device: no host sync per step
        for _ in range(steps):
            idx = _sample(train, per, generator)
            xs = [b.x[i] for b, i in zip(train, idx)]
            ys = [b.y[i] for b, i in zip(train, idx)]
            targets = [b.features[i] for b, i in zip(train, idx)]
            if teacher is not None:
                # The K new buffers' samples are augmented and re-scored by their live experts in one batched
                # forward; memory samples keep the features their (absent) experts stored.
                x_new = augment(torch.stack(xs[:k]).flatten(0, 1), cfg.augment, generator).unflatten(0, (k, per))
                with autocast(device, cfg.amp):
                    live = teacher(x_new).float()
                xs[:k] = list(x_new)
                targets[:k] = list(live)
            x, y, t = torch.cat(xs), torch.cat(ys), torch.cat(targets)
            with autocast(device, cfg.amp):
                loss, _ = _loss(base, x, y, t, mask, cfg.lambda_d)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.detach().float()
        running = float(running)
        val_loss, val_acc = _validate(base, val, mask, cfg.lambda_d, device, cfg.amp)
        history.append({"epoch": epoch, "loss": running / steps, "val_loss": val_loss, "val_accuracy": val_acc,
                        "lr": opt.param_groups[0]["lr"]})
        if not math.isnan(val_loss):
            sched.step(val_loss)
        if bar is not None:
            bar.set_postfix(loss=f"{running / steps:.3f}", val=f"{val_acc:.3f}")
            bar.update(1)
        if stopper.step(val_loss, epoch, base):
            break
    if bar is not None:
        bar.close()
    stopper.restore(base)
    base.eval()
    kept = stopper.best_epoch if cfg.restore_best else epoch
    return ConsolidationResult(stopper.best, stopper.best_epoch, epoch + 1, history, kept)


# --- consolidating experts straight from a registry ------------------------------------------------------------

def consolidate_experts(registry: Any, base_ref: str, expert_refs: Sequence[str], cfg: ConsolidationConfig, *,
                        memory_refs: Sequence[str] = (), memory_size: int = 10000, name: str | None = None,
                        target: Any = None, device: str | None = None, seed: int = 0,
                        progress: bool = True) -> Any:
    """Pull a base and a batch of experts (with their buffers) from ``registry``, consolidate them into a new
    base, and write it to ``target`` (default: the same registry) with lineage: parents are the base and every
    expert, and the card embeds the consolidation recipe. ``memory_refs`` name earlier experts whose buffers
    form the memory (cut to equal shares of ``memory_size``). Returns the new base's card."""
    from registry.errors import ZooError

    from .train import resolve_device

    if not expert_refs:
        raise ZooError("consolidate: no experts selected")
    cards = [registry.card(r) for r in (base_ref, *expert_refs, *memory_refs)]
    for c in cards[1:]:
        if c.buffer is None:
            raise ZooError(f"expert {c.name} ({c.id}) has no buffer: consolidation needs the buffers BMC experts leave")
    with registry.fetch(cards) as fetched:  # one download batch from the Hub
        base_expert, experts = fetched[0], fetched[1:1 + len(expert_refs)]
        memory_experts = fetched[1 + len(expert_refs):]
        return _consolidate_fetched(base_expert, experts, memory_experts, cfg, memory_size=memory_size, name=name,
                                    target=target if target is not None else registry,
                                    dev=resolve_device(device), seed=seed, progress=progress)


def _consolidate_fetched(base_expert: Any, experts: Sequence[Any], memory_experts: Sequence[Any],
                         cfg: ConsolidationConfig, *, memory_size: int, name: str | None, target: Any,
                         dev: torch.device, seed: int, progress: bool) -> Any:
    from dataclasses import asdict

    from registry.card import ParentRef, TaskSpec
    from registry.errors import ZooError

    from .buffer import equal_share

    base = base_expert.model(dev)
    if base_expert.config().heads is not None:
        raise ZooError(f"base {base_expert.name} ({base_expert.id}) is multi-head; BMC consolidates single-head models")
    new_buffers = [Buffer.from_tensors(e.buffer()).to(dev) for e in experts]
    memory = equal_share([Buffer.from_tensors(e.buffer()).to(dev) for e in memory_experts], memory_size,
                         torch.Generator().manual_seed(seed))
    dim = base.num_features if hasattr(base, "num_features") else None
    for e, b in zip((*experts, *memory_experts), (*new_buffers, *memory)):
        if dim is not None and b.features.shape[1] != dim:
            raise ZooError(f"expert {e.name} ({e.id}) stores {b.features.shape[1]}-d features; the base has {dim}")
    num_classes = base_expert.card.num_classes
    tasks: dict[int, tuple[int, ...]] = {t.id: t.classes for t in base_expert.card.tasks}
    for e in (*experts, *memory_experts):
        tasks.update({t.id: t.classes for t in e.card.tasks})
    seen = sorted({c for cls in tasks.values() for c in cls})
    if any(c >= num_classes for c in seen):
        raise ZooError(f"the experts' classes go beyond the base's {num_classes} outputs")
    teachers = [e.model(dev) for e in experts] if cfg.teacher == "live" else None
    result = consolidate(base.train(), new_buffers, memory, cfg, seen_classes=seen, num_classes=num_classes,
                         experts=teachers, generator=torch.Generator().manual_seed(seed), progress=progress)
    recipe = {"method": "bmc-consolidation", "base": base_expert.id, "experts": [e.id for e in experts],
              "memory": [e.id for e in memory_experts], "memory_size": memory_size, "seed": seed,
              "consolidation": asdict(cfg)}
    parents = [ParentRef(base_expert.id, base_expert.card.digest, "base")] + [
        ParentRef(e.id, e.card.digest, "expert") for e in experts]
    kept = result.kept
    return target.save(
        base,
        name=name or f"{base_expert.name}-bmc",
        tasks=[TaskSpec(i, tuple(c)) for i, c in sorted(tasks.items())],
        parents=parents, method="bmc-consolidation", hyperparameters={"recipe": recipe}, seed=seed,
        metrics={"val_loss": kept.get("val_loss", float("nan")), "val_accuracy": kept.get("val_accuracy", float("nan"))},
        labels=list(base_expert.card.labels))
