"""Ex-Model distillation (Carta et al., CLVision 2022): the target rule, the losses and the student's loop.

A student f_i is built from the previous student f_{i-1} and a new expert e_i alone, on synthetic inputs.
For an input x the **target** (class-IL, raw logits, no temperature) is

    T = 0 over all classes;  T[C_i] = e_i(x)[C_i];  T[C_prev] += f_{i-1}(x)[C_prev];  halved on C_i ∩ C_prev

so the new expert is read only on its own classes, unseen classes stay 0, and a class both know gets the
mean of the two. The loss is MSE(f(x), T) over all classes plus CE(f(x), y) over the seen classes (``y``
the synthetic label), or with ``loss: kd`` KL(softmax(T/τ) ‖ softmax(f/τ))·τ² (a proper log-softmax; the
reference's ``kldiv`` option was broken). ``bias_normalization`` subtracts each model's per-sample mean logit
over its own classes before combining, for experts whose logit scales differ (different initialisations or
architectures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .schema import bounded
from .train import class_mask, make_optimizer, progress_bar, TrainConfig


def _centre(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return logits - logits[:, classes].mean(1, keepdim=True)


def exmodel_targets(expert_logits: torch.Tensor, expert_classes: Sequence[int],
                    prev_logits: torch.Tensor | None = None, prev_classes: Sequence[int] = (),
                    bias_normalization: bool = False) -> torch.Tensor:
    """The Ex-Model target rule (module docstring) as a pure function of the two models' logits (N, C).

    ``expert_logits`` are read only on ``expert_classes`` and ``prev_logits`` only on ``prev_classes``;
    every other class is 0. With ``bias_normalization`` each model's logits are first centred on its own
    classes' per-sample mean."""
    n, c = expert_logits.shape
    new = torch.as_tensor(list(expert_classes), dtype=torch.long, device=expert_logits.device)
    e = _centre(expert_logits, new) if bias_normalization else expert_logits
    target = expert_logits.new_zeros(n, c)
    target[:, new] = e[:, new]
    if prev_logits is not None and len(prev_classes):
        old = torch.as_tensor(list(prev_classes), dtype=torch.long, device=expert_logits.device)
        p = _centre(prev_logits, old) if bias_normalization else prev_logits
        target[:, old] += p[:, old]
        both = torch.zeros(c, dtype=torch.bool, device=expert_logits.device)
        both[new] = True
        overlap = both & torch.zeros(c, dtype=torch.bool, device=expert_logits.device).index_fill_(0, old, True)
        target[:, overlap] = target[:, overlap] / 2
    return target


def distillation_loss(student_logits: torch.Tensor, target: torch.Tensor, y: torch.Tensor | None,
                      seen: torch.Tensor, loss: str = "mse", tau: float = 2.0) -> torch.Tensor:
    """MSE(f, T) over all classes + CE(f, y) over the ``seen`` classes (a bool mask), or with ``loss="kd"``
    KL(softmax(T/τ) ‖ softmax(f/τ))·τ² over the seen classes (+ the same CE)."""
    f = student_logits.float()
    if loss == "kd":
        log_p = F.log_softmax(f.masked_fill(~seen, -math.inf) / tau, 1)
        q = F.softmax(target.float().masked_fill(~seen, -math.inf) / tau, 1)
        term = F.kl_div(log_p.masked_fill(~seen, 0.0), q, reduction="batchmean") * tau ** 2
    else:
        term = F.mse_loss(f, target.float())
    if y is not None:
        term = term + F.cross_entropy(f.masked_fill(~seen, -math.inf), y)
    return term


@dataclass
class DistillConfig:
    """The student's optimisation (reference defaults): SGD lr 0.1 (momentum 0.9) for a fixed number of
    ``iterations`` per expert, minibatches of ``batch_size`` synthetic samples, the student carried forward."""

    iterations: int = bounded(2000, ge=1)
    batch_size: int = bounded(128, ge=1)
    lr: float = bounded(0.1, gt=0)
    momentum: float = bounded(0.9, ge=0, lt=1)
    weight_decay: float = bounded(0.0, ge=0)
    loss: Literal["mse", "kd"] = "mse"
    tau: float = bounded(2.0, gt=0)
    bias_normalization: bool = False
    augment: str = "none"


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, num_classes: int, batch: int = 1024) -> torch.Tensor:
    """A model's logits, zero-padded to ``num_classes`` columns (an expert may have fewer outputs than the
    student: it is read only on its own classes anyway)."""
    model.eval()
    out = torch.cat([model(x[i:i + batch]).float() for i in range(0, len(x), batch)])
    if out.shape[1] < num_classes:
        out = F.pad(out, (0, num_classes - out.shape[1]))
    return out[:, :num_classes]


def distill_step_targets(expert: nn.Module, expert_classes: Sequence[int], prev: nn.Module | None,
                         prev_classes: Sequence[int], x: torch.Tensor, bias_normalization: bool,
                         num_classes: int) -> torch.Tensor:
    """Targets for the inputs ``x`` from the new expert and the previous student (frozen)."""
    return exmodel_targets(_logits(expert, x, num_classes), expert_classes,
                           _logits(prev, x, num_classes) if prev is not None else None, prev_classes,
                           bias_normalization)


def train_student(student: nn.Module, x: torch.Tensor, target: torch.Tensor, y: torch.Tensor | None,
                  seen_classes: Sequence[int], num_classes: int, cfg: DistillConfig, generator: torch.Generator,
                  fresh: Any = None, progress: bool = False, desc: str = "distil") -> list[float]:
    """Train ``student`` in place for ``cfg.iterations`` steps on (x, T, y), or with ``fresh`` (a callable
    ``fresh(n) -> (x, T, y)``) on a new draw every step (the noise source). Returns the loss every 100 steps."""
    from .augment import augment

    device = next(student.parameters()).device
    seen = class_mask(seen_classes, num_classes, device)
    opt = make_optimizer(student.parameters(), TrainConfig(optimizer="sgd", lr=cfg.lr, momentum=cfg.momentum,
                                                           weight_decay=cfg.weight_decay))
    student.train()
    history: list[float] = []
    bar = progress_bar(cfg.iterations, desc, progress)
    running = torch.zeros((), device=device)
    for step in range(cfg.iterations):
        if fresh is not None:
            xb, tb, yb = fresh(cfg.batch_size)
        else:
            idx = torch.randint(0, len(x), (cfg.batch_size,), generator=generator).to(device)
            xb, tb, yb = x[idx], target[idx], (y[idx] if y is not None else None)
        if cfg.augment != "none":
            xb = augment(xb, cfg.augment, generator)
        loss = distillation_loss(student(xb), tb, yb, seen, cfg.loss, cfg.tau)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.detach()
        if (step + 1) % 100 == 0 or step + 1 == cfg.iterations:
            history.append(float(running) / ((step % 100) + 1))
            running.zero_()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    student.eval()
    return history


@dataclass
class Share:
    """The synthetic samples one expert contributed to the student's buffer (inputs and their labels)."""

    x: torch.Tensor
    y: torch.Tensor

    def subsample(self, n: int, generator: torch.Generator) -> "Share":
        """At most ``n`` of the samples, drawn without replacement."""
        if len(self.y) <= n:
            return self
        idx = torch.randperm(len(self.y), generator=generator)[:n].to(self.y.device)
        return Share(self.x[idx], self.y[idx])


def distill_expert(student: nn.Module, expert: nn.Module, expert_classes: Sequence[int],
                   seen_before: Sequence[int], shares: list[Share], source: Any, buffer_size: int,
                   cfg: DistillConfig, num_classes: int, generator: torch.Generator,
                   progress: bool = False) -> tuple[list[Share], dict[str, Any]]:
    """One Ex-Model step: the student (in place) learns expert ``i = len(shares) + 1`` on top of what it
    knew, from synthetic data only. The buffer keeps ⌊B/i⌋ samples per expert: a fresh share from the new
    expert, the older shares subsampled; every sample (old ones included) is relabelled through the target
    rule by the previous student and the new expert, never by its original expert. Returns the new shares
    and facts for the log."""
    import copy
    import time

    prev = copy.deepcopy(student).eval().requires_grad_(False) if seen_before else None
    seen = list(seen_before) + [c for c in expert_classes if c not in set(seen_before)]
    seen_mask = class_mask(seen, num_classes, next(student.parameters()).device)

    def relabel(x: torch.Tensor) -> torch.Tensor:
        return distill_step_targets(expert, expert_classes, prev, seen_before, x, cfg.bias_normalization, num_classes)

    def argmax_labels(t: torch.Tensor) -> torch.Tensor:
        return t.masked_fill(~seen_mask, -math.inf).argmax(1)

    t0 = time.perf_counter()
    info: dict[str, Any] = {"source": source.name}
    if source.fresh:
        def fresh(k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x, _ = source.make(expert, expert_classes, k, generator)
            t = relabel(x)
            return x, t, argmax_labels(t)

        new_shares = shares
        info["synthesis_s"] = 0.0
        history = train_student(student, None, None, None, seen, num_classes, cfg, generator, fresh=fresh,
                                progress=progress)
    else:
        n = max(1, buffer_size // (len(shares) + 1))
        x_new, y_new = source.make(expert, expert_classes, n, generator)
        info["synthesis_s"] = time.perf_counter() - t0
        new_shares = [s.subsample(n, generator) for s in shares] + [Share(x_new, y_new)]
        x = torch.cat([s.x for s in new_shares])
        target = relabel(x)
        # The synthetic label of an inverted (or replayed) sample is what it was made for; noise and auxiliary
        # samples have none, so the target's argmax stands in.
        y = torch.cat([s.y for s in new_shares]) if getattr(source, "has_labels", True) else argmax_labels(target)
        history = train_student(student, x, target, y, seen, num_classes, cfg, generator, progress=progress)
        info["buffer"] = int(len(x))
    info.update({"seconds": time.perf_counter() - t0, "loss": history[-1] if history else None})
    return new_shares, info


# --- distilling registry experts -------------------------------------------------------------------------------

def _task_order(card: Any) -> tuple[int, str]:
    return (min(card.task_ids) if card.task_ids else 10**9, card.id)


def recorded_input_shape(card: Any) -> list[int]:
    """The input shape a card records: ``input.shape`` (every run writes it) or Ex-Model's ``input_shape``."""
    hyper = card.hyperparameters
    data_input = hyper.get("input") if isinstance(hyper.get("input"), dict) else {}
    return list(data_input.get("shape") or hyper.get("input_shape") or [])


def distill_registry_experts(registry: Any, expert_refs: Sequence[str], cfg: DistillConfig, *, source: str,
                             inversion: Any = None, buffer_size: int = 5000, base_ref: str | None = None,
                             student_arch: str | None = None, input_shape: Sequence[int] | None = None,
                             aux_inputs: torch.Tensor | None = None, name: str | None = None, target: Any = None,
                             device: str | None = None, seed: int = 0, progress: bool = True) -> Any:
    """Build a student from registry experts alone (Ex-Model, data-free) and write it with its lineage.

    The experts (ids, names, tags) are taken in task order from their cards and read only through their
    logits on the classes their cards name, so they may have different architectures. The student starts
    from ``base_ref`` (then it must keep that base's classes) or is a fresh ``student_arch`` (default: the
    first expert's architecture and arguments). ``input_shape`` defaults to the one zoo runs record in an
    expert's card. The card of the result records every distillation setting."""
    from dataclasses import asdict

    from registry.card import ParentRef, TaskSpec
    from registry.errors import ZooError, first_line

    from .models import create_model
    from .synthetic import AuxSource, InversionConfig, InversionSource, NoiseSource, fit_inputs
    from .train import resolve_device

    if not expert_refs:
        raise ZooError("consolidate: no experts selected")
    dev = resolve_device(device)
    cards = sorted({c.id: c for c in (registry.card(r) for r in expert_refs)}.values(), key=_task_order)
    base_card = registry.card(base_ref) if base_ref else None
    if base_card is not None:
        cards = [c for c in cards if c.id != base_card.id]
    shapes = {tuple(recorded_input_shape(c)) for c in cards} - {()}
    if input_shape is None:
        if len(shapes) != 1:
            raise ZooError("consolidate: the experts' cards do not record one input shape; give --input-shape")
        input_shape = next(iter(shapes))
    input_shape = tuple(int(d) for d in input_shape)
    num_classes = max(c.num_classes for c in [*cards, *([base_card] if base_card else [])])
    inv = inversion or InversionConfig()
    if source == "noise":
        src = NoiseSource(input_shape, dev)
    elif source == "inversion":
        src = InversionSource(input_shape, inv, dev)
    elif source == "aux":
        if aux_inputs is None:
            raise ZooError("consolidate: --source aux needs --aux DATASET")
        src = AuxSource(fit_inputs(aux_inputs, input_shape), dev)
    else:
        raise ZooError(f"consolidate: unknown source {source!r} (noise, aux or inversion: the data is private)")
    generator = torch.Generator().manual_seed(seed)
    fetched_cards = ([base_card] if base_card else []) + cards
    with registry.fetch(fetched_cards) as fetched:
        base_expert = fetched[0] if base_card else None
        experts = fetched[1:] if base_card else fetched
        if base_expert is not None:
            student = base_expert.model(dev)
            seen = sorted({c for t in base_card.tasks for c in t.classes})
        else:
            arch = student_arch or cards[0].architecture
            like = next((e for e in experts if e.card.architecture == arch), None)
            args = dict(like.config().model_args) if like is not None else {}
            torch.manual_seed(seed)
            student = create_model(arch, num_classes, **args).to(dev)
            seen = []
        if any(c >= getattr(student, "num_classes", num_classes) for e in experts for t in e.card.tasks
               for c in t.classes):
            raise ZooError("consolidate: the experts' classes go beyond the student's outputs")
        shares: list[Share] = []
        steps = []
        for e in experts:
            classes = sorted({c for t in e.card.tasks for c in t.classes})
            model = e.model(dev)
            try:
                shares, info = distill_expert(student, model, classes, seen, shares, src, buffer_size, cfg,
                                              num_classes, generator, progress=progress)
            except RuntimeError as err:  # an expert that cannot take these inputs
                raise ZooError(f"expert {e.name} ({e.id}) cannot take inputs of shape {input_shape}: "
                               f"{first_line(err)}") from None
            steps.append({"expert": e.id, "classes": classes, **info})
            seen = seen + [c for c in classes if c not in set(seen)]
        tasks: dict[int, tuple[int, ...]] = {t.id: t.classes for t in (base_card.tasks if base_card else [])}
        for e in experts:
            tasks.update({t.id: t.classes for t in e.card.tasks})
        recipe = {"method": "exmodel-distillation", "source": source, "buffer_size": buffer_size, "seed": seed,
                  "input_shape": list(input_shape), "experts": [c.id for c in cards],
                  "base": base_card.id if base_card else None, "student_architecture": student.zoo_config.architecture,
                  "distill": asdict(cfg), **({"inversion": asdict(inv)} if source == "inversion" else {})}
        parents = ([ParentRef(base_card.id, base_card.digest, "base")] if base_card else []) + [
            ParentRef(c.id, c.digest, "expert") for c in cards]
        dest = target if target is not None else registry
        return dest.save(student.cpu(), name=name or "exmodel-student",
                         tasks=[TaskSpec(i, tuple(c)) for i, c in sorted(tasks.items())], parents=parents,
                         method="exmodel-distillation", hyperparameters={"recipe": recipe, "steps": steps,
                                                                         "input_shape": list(input_shape)},
                         seed=seed, metrics={"distill_loss": steps[-1]["loss"]} if steps else {},
                         labels=sorted({x for c in cards for x in c.labels}))
