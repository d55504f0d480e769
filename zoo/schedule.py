"""Model Zoo's boosting scheduler (Ramesh & Chaudhari, ICLR 2022): which task groups to train next.

State: a weight w_t per task (start 1). Each round:

1. **Pick the group**: the new task plus up to k−1 past tasks drawn **without replacement** with probability
   p_t ∝ w_t. Round size (``round_size``): ``paper`` takes k−1 past tasks as soon as that many exist;
   ``mzc`` reproduces the reference repository's off-by-one, where round r (0-based) trains min(k, r) tasks
   (at least the new one), one fewer than the paper while fewer than k tasks are seen.
   ``next_round(n_groups)`` returns several disjoint groups at once (one per parallel expert).
2. (The caller trains a model on the group and adds it to the zoo.)
3. **Reweight** from the zoo's per-task loss ℓ_t: w_t = clip(exp((ℓ_t − ℓ̄)/ℓ̄), 1e-4, 1e3), with ℓ̄ the mean
   over **seen** tasks (``normalize: seen``, the paper) or over all T tasks with unseen ones at log|C_t|
   (``normalize: all``, the repository).

Without a new task (multi-task mode) a round draws k tasks from all T by p ∝ w. All randomness comes from one
seeded generator, and the whole state round-trips through :meth:`state_dict`, so a resumed run continues the
same sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from registry.errors import ZooError


@dataclass
class BoostingConfig:
    """Scheduler settings: group size k, round-size preset, normalisation, and where losses come from."""

    k: int = 5
    round_size: Literal["paper", "mzc"] = "paper"
    normalize: Literal["seen", "all"] = "seen"
    loss_source: Literal["train", "val"] = "train"
    min_weight: float = 1e-4
    max_weight: float = 1e3


def boosting_weights(losses: Mapping[int, float], cfg: BoostingConfig, num_classes: Mapping[int, int] | None = None,
                     num_tasks: int | None = None) -> dict[int, float]:
    """New task weights from per-task losses (see module docstring), for the seen tasks in ``losses``.

    With ``normalize: all``, ℓ̄ averages over ``num_tasks`` tasks where each unseen task counts log|C_t|
    (``num_classes`` maps every task id to its class count).
    """
    if not losses:
        return {}
    if cfg.normalize == "all":
        if num_classes is None or num_tasks is None:
            raise ValueError("normalize: all needs every task's class count")
        unseen = [math.log(num_classes[t]) for t in num_classes if t not in losses]
        mean = (sum(losses.values()) + sum(unseen)) / num_tasks
    else:
        mean = sum(losses.values()) / len(losses)
    if mean <= 0:
        return {t: 1.0 for t in losses}
    return {t: min(cfg.max_weight, max(cfg.min_weight, math.exp((loss - mean) / mean))) for t, loss in losses.items()}


class BoostingScheduler:
    """The seeded boosting scheduler (see module docstring)."""

    def __init__(self, task_ids: Sequence[int], cfg: BoostingConfig | None = None, seed: int = 0,
                 num_classes: Mapping[int, int] | None = None):
        self.cfg = cfg or BoostingConfig()
        if self.cfg.k < 1:
            raise ZooError("schedule: k must be at least 1")
        self.task_ids = list(task_ids)
        self.num_classes = dict(num_classes or {})
        self.weights = {t: 1.0 for t in self.task_ids}
        self.seen: list[int] = []
        self.rounds = 0
        self.rng = np.random.default_rng(seed)

    def _draw(self, pool: list[int], n: int) -> list[int]:
        n = min(n, len(pool))
        if n <= 0:
            return []
        w = np.array([self.weights[t] for t in pool], dtype=float)
        picked = self.rng.choice(len(pool), size=n, replace=False, p=w / w.sum())
        return [pool[i] for i in picked]

    def next_round(self, new_task: int | None = None, n_groups: int = 1,
                   eligible: Sequence[int] | None = None) -> list[list[int]]:
        """The next round's task groups. With ``new_task`` (continual mode) it joins the seen tasks and is in
        the first group; past tasks fill the groups by weight, without overlap between groups. ``eligible``
        restricts the past tasks that may be drawn (e.g. those whose data is still at hand)."""
        if n_groups < 1:
            raise ZooError("schedule: n_groups must be at least 1")
        self.rounds += 1
        k = self.cfg.k
        if new_task is None:
            pool = list(self.task_ids)
            groups = []
            for _ in range(n_groups):
                g = self._draw(pool, k)
                if not g:
                    break
                pool = [t for t in pool if t not in g]
                groups.append(sorted(g))
            return groups
        if new_task not in self.weights:
            raise ZooError(f"schedule: unknown task {new_task}")
        past = [t for t in self.seen if t != new_task and (eligible is None or t in eligible)]
        if new_task not in self.seen:
            self.seen.append(new_task)
        # paper: k-1 past tasks once they exist. mzc: the repository indexes rounds from 0 and trains
        # min(k, r) tasks in round r, i.e. one task fewer than the paper until the zoo has k tasks.
        n_past = k - 1 if self.cfg.round_size == "paper" else max(0, min(k, self.rounds - 1) - 1)
        first = [new_task] + self._draw(past, n_past)
        groups = [first]
        pool = [t for t in past if t not in first]
        for _ in range(n_groups - 1):
            g = self._draw(pool, max(1, n_past))
            if not g:
                break
            pool = [t for t in pool if t not in g]
            groups.append(g)
        return groups

    def update(self, losses: Mapping[int, float]) -> dict[int, float]:
        """Reweight the seen tasks from the zoo's per-task losses; return the new weights of all tasks."""
        new = boosting_weights(losses, self.cfg, self.num_classes or None, len(self.task_ids))
        self.weights.update(new)
        return dict(self.weights)

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state (weights, seen tasks, round count, generator state)."""
        return {"weights": {str(t): w for t, w in self.weights.items()}, "seen": list(self.seen),
                "rounds": self.rounds, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.weights = {int(t): float(w) for t, w in state["weights"].items()}
        self.seen = [int(t) for t in state["seen"]]
        self.rounds = int(state["rounds"])
        self.rng.bit_generator.state = state["rng"]


def plan_next_round(experts: list[Any], recipe: Any, cfg: BoostingConfig, n_groups: int = 1, seed: int = 0,
                    device: str | None = None) -> dict[str, Any]:
    """What the boosting scheduler would train next for a zoo of registry experts on a recipe's stream.

    The experts' ensemble is scored (NLL) on each task it knows (``cfg.loss_source`` split); the weights
    follow; the next groups start from the first task no expert knows (continual mode), or are drawn from
    all tasks when every task is known (multi-task mode).
    """
    from .ensemble import nll_per_task
    from .evaluate import ensemble_on_stream

    stream, ensemble = ensemble_on_stream(experts, recipe, device)
    known = sorted(ensemble.task_ids() & {t.id for t in stream.tasks})
    scheduler = BoostingScheduler([t.id for t in stream.tasks], cfg, seed=seed,
                                  num_classes={t.id: len(t.classes) for t in stream.tasks})
    losses = nll_per_task(ensemble, {t: getattr(stream.tasks[t], cfg.loss_source) for t in known})
    scheduler.seen = list(known)
    scheduler.rounds = len(known)
    weights = scheduler.update(losses)
    new = next((t.id for t in stream.tasks if t.id not in known), None)
    groups = scheduler.next_round(new_task=new, n_groups=n_groups)
    return {"experts": [e.id for e in experts], "known_tasks": known, "new_task": new, "groups": groups,
            "losses": {str(t): losses[t] for t in known}, "weights": {str(t): weights[t] for t in known}}
