"""BMC — Batch Model Consolidation (Fostiropoulos, Zhu, Itti, CVPR 2023).

The stream is cut into batches of K tasks. For each batch:

1. **Regularisation phase**: K experts start from a copy of the current base and train in parallel (through an
   :mod:`zoo.parallel` executor), each on its task with task-sliced cross-entropy plus the stability loss
   λ_s·MSE(φ_e(x_m), φ_b(x_m)) against the frozen base on memory samples (task samples while the memory is
   empty, or always with ``stability_on: task``). Each expert then builds its buffer (:mod:`zoo.buffer`).
2. **Consolidation phase** (:mod:`zoo.consolidate`): the base learns from the K new buffers and the memory.
3. The new buffers join the memory, and every buffer is cut to an equal share of ``memory_size``.

Fixes over the reference code: the stability term is on (it ships commented out), a trailing partial batch
of tasks is consolidated, class-IL evaluation masks unseen classes, and early stopping uses validation data.
Until a batch is complete its tasks are not learnt: the rows of the accuracy matrix for stages inside a
batch show the base as it was, which is what a user of BMC has at that moment.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..buffer import Buffer, build_buffer, equal_share
from ..consolidate import ConsolidationConfig, consolidate
from ..data import Split
from .base import Method, register_method, test_metrics
from ..metrics import Predictor
from ..models import ModelConfig, build_from_config, features
from ..schema import bounded
from ..train import TrainConfig, fit, prepare_model, resolve_device


@dataclass
class BMCParams:
    """BMC's parameters; bracketed defaults of ALGORITHMS.md §2.

    ``schedule: boosting`` gives each expert a group from Model Zoo's boosting scheduler: its new task plus up
    to k-1 past tasks drawn by weight, whose memory buffers the expert rehearses; the weights come from the
    base's loss per task after each consolidation. ``sequential`` (the paper) trains each expert on its task.
    """

    batch_tasks: int = bounded(4, ge=1)
    lambda_s: float = bounded(1.0, ge=0)
    stability_on: Literal["memory", "task"] = "memory"
    buffer_fraction: float = bounded(0.1, gt=0, le=1)
    buffer_size: int = bounded(2000, ge=1)
    memory_size: int = bounded(10000, ge=1)
    consolidation: ConsolidationConfig = field(default_factory=ConsolidationConfig)
    schedule: Literal["sequential", "boosting"] = "sequential"
    k: int = bounded(3, ge=1)
    executor: Literal["local", "process", "ray"] = "local"
    num_gpus: float = bounded(0.0, ge=0)
    max_retries: int = bounded(2, ge=0)
    ray_address: str | None = None


# --- the regularisation phase: one expert, as a job any executor can run -------------------------------------

def train_expert_job(job: dict[str, Any], shared: dict[str, bytes]) -> dict[str, Any]:
    """Train one BMC expert from the shared base checkpoint and build its buffer (runs in any worker).

    ``job`` holds the task (id, classes), its data as safetensors bytes, the model config, training settings,
    BMC parameters and seed; ``shared`` (sent once for all K jobs) holds the base checkpoint and the memory's
    inputs; the result holds the expert's weights and its buffer
    as safetensors bytes, plus training facts.
    """
    from ..parallel import TransientError, bytes_to_tensors, tensors_to_bytes

    device = resolve_device(job.get("device"))
    torch.manual_seed(job["seed"])
    generator = torch.Generator().manual_seed(job["seed"])
    expert = build_from_config(ModelConfig.from_dict(job["model_config"]))
    expert.load_state_dict(bytes_to_tensors(shared["base"]))
    expert = prepare_model(expert, device)
    base = copy.deepcopy(expert).eval().requires_grad_(False)
    data = {k: v.to(device) for k, v in bytes_to_tensors(job["data"]).items()}
    train, val = Split(data["train_x"], data["train_y"]), Split(data["val_x"], data["val_y"])
    task_train = train
    if "rehearse_x" in data:  # boosting: past tasks of the group, from the memory
        train = Split(torch.cat([train.x, data["rehearse_x"]]), torch.cat([train.y, data["rehearse_y"]]))
    memory_x = bytes_to_tensors(shared["memory"])["x"].to(device) if "memory" in shared else None
    params = job["params"]
    use_memory = params["stability_on"] == "memory" and memory_x is not None and len(memory_x) > 0

    def stability(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if use_memory:
            xm = memory_x[torch.randint(0, len(memory_x), (len(xb),), generator=generator).to(device)]
        else:
            xm = xb
        with torch.no_grad():
            target = features(base, xm).float()
        return params["lambda_s"] * F.mse_loss(features(model, xm).float(), target)

    classes = job["task"]["classes"]
    loss_classes = job["task"].get("group_classes", classes)
    try:
        result = fit(expert, train, val, TrainConfig(**job["training"]), num_classes=job["num_classes"],
                     classes=loss_classes, extra_loss=stability if params["lambda_s"] > 0 else None,
                     generator=generator, desc=f"expert task {job['task']['id']}", progress=job.get("progress", False))
    except torch.cuda.OutOfMemoryError as e:  # a busy shared GPU: worth another try elsewhere
        raise TransientError(f"out of GPU memory training task {job['task']['id']}: {e}") from None
    buffer = build_buffer(expert, task_train, classes, job["task"]["id"], params["buffer_fraction"],
                          params["buffer_size"], generator)
    return {
        "state": tensors_to_bytes(expert.state_dict()),
        "buffer": tensors_to_bytes(buffer.tensors()),
        "info": {"task": job["task"]["id"], "group": job["task"].get("group", [job["task"]["id"]]),
                 "epochs": result.epochs_run, "val_accuracy": result.val_accuracy, "buffer": len(buffer)},
    }


@register_method("bmc")
class BMC(Method):
    """Batch Model Consolidation (see module docstring)."""

    Params = BMCParams

    def __init__(self, params: BMCParams, ctx: Any):
        super().__init__(params, ctx)
        if params.batch_tasks < 1:
            raise ValueError("bmc: batch_tasks must be at least 1")
        self.base = ctx.new_model()
        self.memory_buffers: list[Buffer] = []
        self.last_batch: tuple[int, list[nn.Module], list[Buffer]] | None = None
        self._executor = None
        self.scheduler = None
        if params.schedule == "boosting":
            from ..schedule import BoostingConfig, BoostingScheduler

            stream = ctx.stream
            self.scheduler = BoostingScheduler([t.id for t in stream.tasks], BoostingConfig(k=params.k), seed=ctx.seed,
                                               num_classes={t.id: len(t.classes) for t in stream.tasks})

    # --- batches -------------------------------------------------------------------------------------------

    def batch_end(self, t: int) -> int:
        """The last task of the batch that task ``t`` belongs to (the stream's last task for a partial batch)."""
        k = self.params.batch_tasks
        return min((t // k + 1) * k, len(self.ctx.stream.tasks)) - 1

    def learned_at(self, t: int) -> int:
        return self.batch_end(t)

    def executor(self) -> Any:
        """The executor experts train on (made on first use, reused across batches)."""
        if self._executor is None:
            from ..parallel import ExecutorOptions, make_executor

            self._executor = make_executor(self.params.executor, ExecutorOptions(
                max_retries=self.params.max_retries, num_gpus=self.params.num_gpus,
                ray_address=self.params.ray_address))
        return self._executor

    def train_stage(self, t: int) -> dict[str, Any]:
        if t != self.batch_end(t):
            return {"deferred": f"task {t} is learnt when its batch ends at task {self.batch_end(t)}"}
        first = t - t % self.params.batch_tasks
        tasks = list(range(first, t + 1))
        experts, buffers, infos = self._regularise(tasks)
        seen = self.ctx.stream.seen_classes(t)
        result = consolidate(self.base, buffers, self.memory_buffers, self.params.consolidation, seen_classes=seen,
                             num_classes=self.ctx.stream.num_classes, experts=experts,
                             generator=torch.Generator().manual_seed(self.ctx.seed * 1000 + t),
                             progress=self.ctx.progress)
        self.last_batch = (t, experts, buffers)
        self.memory_buffers = equal_share(self.memory_buffers + buffers, self.params.memory_size,
                                          torch.Generator().manual_seed(self.ctx.seed * 7919 + t))
        weights = self._reweight(tasks) if self.scheduler is not None else None
        return {"batch": tasks, "experts": infos, **({"weights": weights} if weights else {}),
                "consolidation": {"epochs": result.epochs_run, "kept_epoch": result.kept_epoch,
                                  "val_loss": result.kept.get("val_loss"),
                                  "val_accuracy": result.kept.get("val_accuracy")}}

    def _regularise(self, tasks: list[int]) -> tuple[list[nn.Module], list[Buffer], list[dict[str, Any]]]:
        from ..parallel import bytes_to_tensors, tensors_to_bytes
        from ..schema import to_data

        stream, ctx = self.ctx.stream, self.ctx
        jobs = []
        for t in tasks:
            task = stream.tasks[t]
            data = {"train_x": task.train.x, "train_y": task.train.y, "val_x": task.val.x, "val_y": task.val.y}
            group = self._group(t)
            rehearse = [b for b in self.memory_buffers if b.task in group[1:]]
            if rehearse:
                data["rehearse_x"] = torch.cat([b.x for b in rehearse])
                data["rehearse_y"] = torch.cat([b.y for b in rehearse])
            jobs.append({
                "task": {"id": task.id, "classes": list(task.classes), "group": group,
                         "group_classes": [c for g in group for c in stream.tasks[g].classes]},
                "data": tensors_to_bytes(data),
                "model_config": self.base.zoo_config.to_dict(),
                "num_classes": stream.num_classes,
                "training": to_data(ctx.training),
                "params": {"lambda_s": self.params.lambda_s, "stability_on": self.params.stability_on,
                           "buffer_fraction": self.params.buffer_fraction, "buffer_size": self.params.buffer_size},
                "seed": ctx.seed * 1000 + t,
                "device": None if self.params.executor == "ray" else str(ctx.device),
                "progress": ctx.progress and self.params.executor == "local",
            })
        shared = {"base": tensors_to_bytes(self.base.state_dict())}
        if self.memory_buffers:  # the stability loss's memory samples: the same for every expert, sent once
            shared["memory"] = tensors_to_bytes({"x": torch.cat([b.x for b in self.memory_buffers])})
        results = self.executor().map(train_expert_job, jobs, shared, desc=f"experts {tasks[0]}-{tasks[-1]}",
                                      progress=ctx.progress)
        experts, buffers = [], []
        for r in results:
            expert = prepare_model(build_from_config(self.base.zoo_config), ctx.device)
            expert.load_state_dict({k: v.to(ctx.device) for k, v in bytes_to_tensors(r["state"]).items()})
            experts.append(expert.eval())
            buffers.append(Buffer.from_tensors(bytes_to_tensors(r["buffer"])).to(ctx.device))
        return experts, buffers, [r["info"] for r in results]

    def close(self) -> None:
        """Shut down the executor (and a Ray it started)."""
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    def _group(self, t: int) -> list[int]:
        """Task ``t`` and, under boosting, the past tasks (with buffers in memory) drawn for its expert."""
        if self.scheduler is None:
            return [t]
        return self.scheduler.next_round(new_task=t, eligible=[b.task for b in self.memory_buffers])[0]

    def _reweight(self, tasks: list[int]) -> dict[str, float]:
        """Boosting weights from the new base's NLL per seen task: memory buffers for past tasks, the
        validation split for the batch's new tasks (never test data)."""
        from ..ensemble import Member, ZooEnsemble, nll_per_task

        stream = self.ctx.stream
        seen = self.scheduler.seen
        member = Member(self.base, [(s, list(stream.tasks[s].classes)) for s in seen], False)
        splits = {b.task: Split(b.x, b.y) for b in self.memory_buffers if b.task not in tasks}
        splits.update({s: stream.tasks[s].val for s in tasks})
        losses = nll_per_task(ZooEnsemble([member], stream.num_classes), splits)
        weights = self.scheduler.update(losses)
        return {str(s): weights[s] for s in seen}

    def meta(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict()} if self.scheduler is not None else {}

    def load_meta(self, meta: dict[str, Any]) -> None:
        if self.scheduler is not None and "scheduler" in meta:
            self.scheduler.load_state_dict(meta["scheduler"])

    # --- evaluation, checkpoints, registry -----------------------------------------------------------------

    def predictor(self) -> Predictor:
        self.base.eval()
        return lambda x, task: self.base(x)

    def expert(self) -> nn.Module:
        return self.base

    def memory(self) -> dict[str, int]:
        n = sum(len(b) for b in self.memory_buffers)
        size = sum(t.element_size() * t.numel() for b in self.memory_buffers for t in (b.x, b.features))
        return {"exemplars": n, "bytes": size}

    def state(self) -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v for k, v in self.base.state_dict().items()}
        for i, b in enumerate(self.memory_buffers):
            out.update({f"memory.{i}.{k}": v for k, v in b.tensors().items()})
        return out

    def load_state(self, tensors: dict[str, torch.Tensor], t: int) -> None:
        self.base.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        count = len({k.split(".")[1] for k in tensors if k.startswith("memory.")})
        self.memory_buffers = [Buffer.from_tensors({k.split(".", 2)[2]: v for k, v in tensors.items()
                                                    if k.startswith(f"memory.{i}.")}) for i in range(count)]

    def publish(self, t: int, publish: Any, parent: Any, stage: dict[str, Any]) -> Any:
        """After a batch: push its K experts (each with its buffer, parent: the base they started from), then
        the new base (parents: the previous base and every expert). Stages inside a batch push nothing."""
        if self.last_batch is None or self.last_batch[0] != t:
            return None
        from registry.card import ParentRef

        _, experts, buffers = self.last_batch
        refs = []
        for expert, buf, info in zip(experts, buffers, stage["info"]["experts"]):
            task = self.ctx.stream.tasks[buf.task]
            card = publish(expert, suffix=f"expert-t{task.id}", tasks=[(task.id, task.classes)],
                           parents=[parent] if parent else [], buffer=buf.tensors(),
                           buffer_info={"task": task.id, "feature_dim": int(buf.features.shape[1]),
                                        "fraction": self.params.buffer_fraction,
                                        # the task's range of the class order (the reference's offset, length)
                                        "task_offset": self.ctx.stream.class_order.index(task.classes[0]),
                                        "task_length": len(task.classes)},
                           metrics={"val_accuracy": info["val_accuracy"]}, role="expert")
            if card is not None:
                refs.append(ParentRef(card.id, card.digest, "expert"))
        seen = self.ctx.stream.tasks[: t + 1]
        hyper = {"consolidation": asdict(self.params.consolidation)}
        return publish(self.base, suffix=f"base-s{t}", tasks=[(k.id, k.classes) for k in seen],
                       parents=([parent] if parent else []) + refs, metrics=test_metrics(stage, t),
                       hyperparameters=hyper, role="base")
