"""One training loop for every method: optimiser, schedule and augmentation from the recipe.

By default the loop trains the configured epochs and keeps the last weights, as every reference
implementation does. Early stopping (``patience``), ``restore_best`` and the plateau schedule look at the
validation split the *method* passes in, which must hold every class the method may legitimately use at that
stage (the current task's validation split plus a held-out part of its memory): validating on the current
task alone rewards the epoch most eager to predict the new classes. Ties go to the later epoch.

Data stays as tensors on the training device (no DataLoader workers: on a GPU that is the fast path, on a CPU
it costs nothing). On CUDA the loop uses bf16 autocast and channels_last for convnets. Methods customise it
through two hooks: ``batch_hook`` rewrites each minibatch (replay mixes in memory samples) and ``extra_loss``
adds a term (BMC's stability loss).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import Augmentation, augment
from .data import Split
from .schema import bounded


@dataclass
class TrainConfig:
    """Optimisation settings of one training run (the recipe's ``training`` block)."""

    epochs: int = bounded(10, ge=1)
    batch_size: int = bounded(64, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = bounded(1e-3, ge=0)
    momentum: float = bounded(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = bounded(0.0, ge=0)
    schedule: Literal["none", "cosine", "step", "plateau"] = "none"
    milestones: list[int] = field(default_factory=list)
    gamma: float = bounded(0.1, gt=0, le=1)
    label_smoothing: float = bounded(0.0, ge=0, lt=1)
    augment: Augmentation = "none"
    patience: int | None = bounded(None, ge=0)
    restore_best: bool = False
    eval_batch_size: int = bounded(2048, ge=1)
    amp: bool = True
    channels_last: bool = True

    @property
    def validates(self) -> bool:
        """Whether validation steers training (early stopping, weight selection or the plateau schedule);
        otherwise it is only measured once, after the last epoch."""
        return self.patience is not None or self.restore_best or self.schedule == "plateau"


@dataclass
class FitResult:
    """What a training run reports: the validation accuracy of the weights kept, the epoch they come from,
    the best validation accuracy and its epoch, epochs run, and the per-epoch history."""

    val_accuracy: float
    kept_epoch: int
    best_val_accuracy: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) picks CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if spec is None or str(spec) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU generator for the loop's own shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _is_convnet(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare_model(model: nn.Module, device: torch.device, cfg: TrainConfig | None = None) -> nn.Module:
    """Move a model to the device, in channels_last on CUDA for convnets."""
    model = model.to(device)
    if device.type == "cuda" and (cfg is None or cfg.channels_last) and _is_convnet(model):
        model = model.to(memory_format=torch.channels_last)
    return model


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op elsewhere (CPU training stays in float32 for exactness)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser the config names."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> Any:
    if cfg.schedule == "cosine":  # per step, as in the Model Zoo reference
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs * steps_per_epoch))
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=cfg.milestones, gamma=cfg.gamma)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=cfg.gamma, patience=2)
    return None


def masked_logits(logits: torch.Tensor, classes: torch.Tensor | None, y: torch.Tensor | None = None,
                  heads: torch.Tensor | None = None) -> torch.Tensor:
    """Logits with every class outside ``classes`` (a bool mask over all classes) set to -inf.

    With ``heads`` (the head id of every output column of a multi-head model) and the targets ``y``, each
    sample instead keeps only the columns of its own target's head: cross-entropy on its task's head.
    """
    if heads is not None and y is not None:
        return logits.masked_fill(heads[None, :] != heads[y][:, None], -math.inf)
    if classes is None:
        return logits
    return logits.masked_fill(~classes, -math.inf)


def masked_cross_entropy(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy on logits whose inactive classes are -inf (a class mask, or other tasks' heads), with
    label smoothing spread over each sample's **active** classes only: smoothing over masked classes would
    put mass on -inf logits and make the loss infinite."""
    if label_smoothing == 0:
        return F.cross_entropy(logits, y)
    logp = F.log_softmax(logits, 1)
    active = torch.isfinite(logits)
    nll = -logp.gather(1, y[:, None]).squeeze(1)
    smooth = -logp.masked_fill(~active, 0.0).sum(1) / active.sum(1).clamp_min(1)
    return ((1 - label_smoothing) * nll + label_smoothing * smooth).mean()


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, classes: torch.Tensor | None = None, batch_size: int = 2048,
             amp: bool = True, heads: torch.Tensor | None = None) -> float:
    """Accuracy of ``model`` on a split, argmax restricted to ``classes`` (a bool mask) when given, or to
    each sample's own head (``heads``: head id per output column) for multi-head models."""
    if len(split) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    correct = 0
    device = split.x.device
    for start in range(0, len(split), batch_size):
        xb = split.x[start:start + batch_size]
        with autocast(device, amp):
            logits = model(xb).float()
        yb = split.y[start:start + batch_size]
        correct += int((masked_logits(logits, classes, yb, heads).argmax(1) == yb).sum())
    model.train(was_training)
    return correct / len(split)


def class_mask(classes: Sequence[int] | None, num_classes: int, device: torch.device) -> torch.Tensor | None:
    """A bool mask over ``num_classes`` with ``classes`` set (None stays None: every class active)."""
    if classes is None:
        return None
    mask = torch.zeros(num_classes, dtype=torch.bool, device=device)
    mask[list(classes)] = True
    return mask


class EarlyStopping:
    """Keeps the best weights seen on validation and says when ``patience`` epochs brought no improvement.

    ``mode`` is ``max`` for accuracies and ``min`` for losses. A tie goes to the later epoch (without
    resetting patience), and a NaN score (no validation data) always counts as the latest best, so training
    without validation keeps its last weights.
    """

    def __init__(self, mode: str = "max", patience: int | None = None, keep_best: bool = True):
        self.sign = 1.0 if mode == "max" else -1.0
        self.patience = patience
        self.keep_best = keep_best
        self.best_score = -math.inf  # signed so that larger is better; -inf after a NaN score
        self.best = float("nan")
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stale = 0

    def step(self, score: float, epoch: int, model: nn.Module) -> bool:
        """Record an epoch's score; return True when training should stop. A tie becomes the kept epoch
        but is no improvement: it does not reset the patience count."""
        signed = -math.inf if math.isnan(score) else self.sign * score
        improved = math.isnan(score) or signed > self.best_score
        if improved or signed == self.best_score:
            self.best_score = signed
            self.best = score
            self.best_epoch = epoch
            self.best_state = copy.deepcopy(model.state_dict()) if self.keep_best else None
        self.stale = 0 if improved else self.stale + 1
        return self.patience is not None and self.stale > self.patience

    def restore(self, model: nn.Module) -> None:
        """Load the best epoch's weights back (when they were kept)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on stderr, or None; ``disable=None`` hides it when stderr is not a terminal."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", leave=False, file=sys.stderr, dynamic_ncols=True, disable=None)


EpochSink = Callable[[dict[str, Any]], None]
_EPOCH_SINKS: contextvars.ContextVar[tuple[EpochSink, ...]] = contextvars.ContextVar("zoo_epoch_sinks", default=())


@contextlib.contextmanager
def epoch_records(sink: EpochSink) -> Any:
    """Within the block, every epoch of every :func:`fit` call is also passed to ``sink`` as a dict (``desc``,
    ``epoch``, ``loss``, ``val_accuracy``, ``lr``, ``seconds``): how a run writes ``history.jsonl`` and
    TensorBoard logs without each method passing them along."""
    token = _EPOCH_SINKS.set(_EPOCH_SINKS.get() + (sink,))
    try:
        yield
    finally:
        _EPOCH_SINKS.reset(token)


BatchHook = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
ExtraLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def fit(model: nn.Module, train: Split, val: Split | None, cfg: TrainConfig, *, num_classes: int,
        classes: Sequence[int] | None = None, batch_hook: BatchHook | None = None,
        extra_loss: ExtraLoss | None = None, generator: torch.Generator | None = None,
        heads: torch.Tensor | None = None, desc: str = "train", progress: bool = True) -> FitResult:
    """Train ``model`` in place on ``train`` (tensors already on the model's device).

    Cross-entropy is taken over ``classes`` (logits of other classes masked out; all classes when None), or,
    for a multi-head model, over each sample's own head (``heads``: the head id of every output column, with
    targets given as output columns). Each minibatch passes through ``batch_hook`` (replay mixes in memory),
    then ``cfg.augment``. The configured epochs run and the last weights are kept, unless ``cfg.patience``
    stops early or ``cfg.restore_best`` restores the best validation epoch; validation accuracy (same mask)
    is measured on ``val`` after every epoch when it steers training, else once at the end. Test data is
    never looked at.
    """
    device = train.x.device
    mask = class_mask(classes, num_classes, device)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    steps = max(1, math.ceil(len(train) / cfg.batch_size))
    sched = _scheduler(opt, cfg, steps)
    criterion = lambda z, y: masked_cross_entropy(z, y, cfg.label_smoothing)  # noqa: E731
    generator = generator or torch.Generator().manual_seed(0)
    stopper = EarlyStopping("max", cfg.patience, cfg.restore_best)
    has_val = val is not None and len(val) > 0
    history: list[dict[str, float]] = []
    bar = progress_bar(cfg.epochs, desc, progress)
    epoch = -1
    sinks = _EPOCH_SINKS.get()
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(train), generator=generator).to(device)
        total = torch.zeros((), device=device)  # summed on the device: no host sync per step
        seen = 0
        for idx in order.split(cfg.batch_size):
            xb, yb = train.x[idx], train.y[idx]
            if batch_hook is not None:
                xb, yb = batch_hook(xb, yb)
            if cfg.augment != "none":
                xb = augment(xb, cfg.augment, generator)
            with autocast(device, cfg.amp):
                logits = model(xb)
                loss = criterion(masked_logits(logits.float(), mask, yb, heads), yb)
                if extra_loss is not None:
                    loss = loss + extra_loss(model, xb, yb, logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if cfg.schedule == "cosine":
                sched.step()
            total += loss.detach().float() * len(yb)
            seen += len(yb)
        last = epoch == cfg.epochs - 1
        val_acc = (accuracy(model, val, mask, cfg.eval_batch_size, cfg.amp, heads)
                   if has_val and (cfg.validates or last) else float("nan"))
        history.append({"epoch": epoch, "loss": float(total) / max(seen, 1), "val_accuracy": val_acc,
                        "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - started})
        for sink in sinks:
            sink({"desc": desc, **history[-1]})
        if cfg.schedule == "step":
            sched.step()
        elif cfg.schedule == "plateau" and not math.isnan(val_acc):
            sched.step(val_acc)
        if bar is not None:
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val=f"{val_acc:.3f}")
            bar.update(1)
        if stopper.step(val_acc, epoch, model):
            break
    if bar is not None:
        bar.close()
    kept = epoch
    if cfg.restore_best:
        stopper.restore(model)
        kept = stopper.best_epoch
    model.eval()
    val_kept = history[kept]["val_accuracy"] if kept >= 0 else float("nan")
    return FitResult(val_accuracy=val_kept, kept_epoch=kept, best_val_accuracy=stopper.best,
                     best_epoch=stopper.best_epoch, epochs_run=epoch + 1, history=history)
