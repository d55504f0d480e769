"""The main job: run a recipe stage by stage, evaluate, checkpoint, push experts, write the run folder.

Run folder::

    recipe.yaml                 the recipe as resolved (every default filled in)
    results.json                every method's results side by side, plus the recipe and the stream
    <method>/results.json       accuracy matrices (class-IL, task-IL), summary metrics, memory, timings
    <method>/accuracy_matrix.png
    checkpoints/<method>/stage-<t>.safetensors   state after each finished stage (for resuming)
    checkpoints/<method>/progress.json           rows and facts of the finished stages
    run.log

Running the same recipe into the same folder again resumes after the last finished stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from registry import Registry, open_registry
from registry.card import ExpertCard, ParentRef, TaskSpec
from registry.errors import ZooError

from .budget import memory_report, plan_budget
from .data import build_stream
from .methods import RunContext, get_method
from .metrics import (PROTOCOLS, class_il_fwt_defined, evaluate_stage, plot_accuracy_matrix, plot_methods,
                      results_from_rows, task_accuracies)
from .recipe import Recipe, dump_recipe, method_training
from .threads import configure_threads
from .train import epoch_records, prepare_model, resolve_device, seed_everything

log = logging.getLogger("zoo")


@dataclass
class RunOptions:
    """How to run: where results go, which registry (None: the recipe's or the default; 'none': no push),
    whether an earlier run in ``out`` may be continued (``resume``) or is replaced (``overwrite``)."""

    out: Path
    registry: str | None = None
    device: str | None = None
    progress: bool = True
    resume: bool = True
    overwrite: bool = False
    tensorboard: bool = False
    """Also log every epoch's loss, validation accuracy and learning rate to ``<out>/tensorboard/<method>``."""
    threads: int | str | None = None
    """CPU threads for torch (a number, ``auto``, ``torch``); None: ``$ZOO_THREADS``, else auto."""
    push: str = "final"
    """What goes to the registry: ``final`` (each method's final model, plus every expert and base the method
    produces on the way: BMC's experts and bases, Ex-Model's experts, Model Zoo's members), ``stages``
    (also every stage's snapshot) or ``none``."""


RUN_FILE = "run.json"  # what the resume check compares beyond the recipe: the target registry
LOCK_FILE = ".zoo-run.lock"


def _setup_logging(out: Path) -> logging.Handler:
    handler = logging.FileHandler(out / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def _target_uri(recipe: Recipe, opts: RunOptions) -> str:
    from registry.settings import default_registry_uri

    from registry.uri import is_hub_uri

    uri = opts.registry if opts.registry is not None else recipe.registry
    if uri == "none":
        return "none"
    uri = uri or default_registry_uri()
    # one spelling per local folder, so that a resume check compares folders, not strings
    return uri if is_hub_uri(uri) or "://" in uri else str(Path(uri).expanduser().resolve())


def _open_target_registry(uri: str) -> Registry | None:
    return None if uri == "none" else open_registry(uri)


@contextlib.contextmanager
def _run_lock(out: Path) -> Iterator[None]:
    """Hold the run folder for this process: a second ``zoo run`` into it fails at once instead of
    interleaving checkpoints (the lock goes with the process, so a killed run leaves none behind)."""
    import fcntl

    with open(out / LOCK_FILE, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ZooError(f"{out} is in use by another zoo run; wait for it or choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _previous_run(out: Path) -> bool:
    return (out / "recipe.yaml").exists() and (out / "checkpoints").exists()


def _method_keys(out: Path) -> list[str]:
    """The methods an earlier run checkpointed in ``out``: the checkpoint folders holding a progress.json."""
    ckpts = out / "checkpoints"
    return [p.name for p in ckpts.iterdir() if p.is_dir() and (p / "progress.json").is_file()] if ckpts.is_dir() else []


def _is_zoo_run(out: Path) -> bool:
    """Whether ``out`` holds a zoo run: its ``run.json``, or (runs from before it) a ``recipe.yaml`` with a
    checkpoint folder that has a ``progress.json``."""
    return (out / RUN_FILE).is_file() or ((out / "recipe.yaml").is_file() and bool(_method_keys(out)))


def _clear_run(out: Path) -> None:
    """Remove what an earlier zoo run wrote into ``out`` (and nothing else): its files, the checkpoint
    folders that hold a ``progress.json``, and the per-method folders and TensorBoard logs named like them.
    A folder that holds no zoo run is refused, so ``--overwrite`` never deletes a user's files."""
    import shutil

    if not _is_zoo_run(out):
        if any(out.iterdir()):
            raise ZooError(f"{out} holds no zoo run to overwrite (no {RUN_FILE}); choose an empty or new --out")
        return
    ckpts = out / "checkpoints"
    for key in _method_keys(out):
        for target in (out / key, out / "tensorboard" / key, ckpts / key):
            if target.is_dir() and not target.is_symlink() and target.resolve().is_relative_to(out.resolve()):
                shutil.rmtree(target)
    for folder in (ckpts, out / "tensorboard"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    for name in ("recipe.yaml", "results.json", "run.log", RUN_FILE, "methods.png", "methods.svg"):
        (out / name).unlink(missing_ok=True)


def _check_resume(out: Path, recipe_text: str, registry_uri: str, opts: RunOptions) -> bool:
    """Whether ``out`` holds this very run, finished (True: nothing to do). Raises when it holds another
    run, or this one with another target registry, or when ``resume`` is off."""
    if not _previous_run(out):
        return False
    if not opts.resume:
        raise ZooError(f"{out} already holds a run; --overwrite replaces it, or choose another --out")
    if (out / "recipe.yaml").read_text() != recipe_text:
        raise ZooError(f"{out} holds a run of a different recipe; --overwrite replaces it, or choose another --out")
    run_file = out / RUN_FILE
    before = json.loads(run_file.read_text()) if run_file.exists() else {}
    if before.get("registry") is not None and before["registry"] != registry_uri:
        raise ZooError(f"{out} was run with registry {before['registry']}, not {registry_uri}: resuming would "
                       f"leave its experts split between the two; use --registry {before['registry']}, --overwrite, "
                       f"or another --out")
    if before.get("push") is not None and before["push"] != opts.push:
        raise ZooError(f"{out} was run with --push {before['push']}, not {opts.push}: use --push {before['push']}, "
                       f"--overwrite, or another --out")
    return (out / "results.json").exists()


def run_recipe(recipe: Recipe, opts: RunOptions) -> dict[str, Any]:
    """Run every method of ``recipe`` on its stream and write the run folder; return the combined results.

    Running into a folder that holds the same recipe resumes after its last finished stage; a finished run
    is reported as it stands (``results["already_complete"]``)."""
    start = time.perf_counter()
    device = resolve_device(opts.device or recipe.device)
    configure_threads(opts.threads, _model_parameters(recipe))  # before the first parallel op of the run
    stream = build_stream(recipe.stream).to(device)
    load_s = time.perf_counter() - start
    # A budget is checked against every method's model cost before anything is written.
    budget = plan_budget(recipe.budget, recipe, stream) if recipe.budget is not None else None
    registry_uri = _target_uri(recipe, opts)
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    recipe_text = dump_recipe(recipe)
    with _run_lock(out):
        if opts.overwrite:
            _clear_run(out)
        if _check_resume(out, recipe_text, registry_uri, opts):
            results = json.loads((out / "results.json").read_text())
            results["already_complete"] = True
            return results
        (out / "recipe.yaml").write_text(recipe_text)
        _write_json(out / RUN_FILE, {"registry": registry_uri, "push": opts.push})
        handler = _setup_logging(out)
        try:
            return _run(recipe, opts, out, stream, device, budget, start, load_s, registry_uri)
        finally:
            log.removeHandler(handler)
            handler.close()


def _model_parameters(recipe: Recipe) -> int:
    """Parameters of the recipe's (largest) architecture, which sizes the CPU thread count."""
    from zoo.budget import parameter_count
    from zoo.models import create_model

    specs = [recipe.model, *recipe.model_changes.values()]
    return max(parameter_count(create_model(s.architecture, 10, **s.args)) for s in specs)


def budgeted(recipe: Recipe, budget: dict[str, Any] | None) -> list[Any]:
    """The recipe's method specs with each budgeted method's memory parameter set to its derived count."""
    if budget is None:
        return list(recipe.methods)
    specs = []
    for spec in recipe.methods:
        plan = budget["methods"][spec.key]
        if plan["applies"]:
            spec = dataclasses.replace(spec, params=dataclasses.replace(spec.params, **{plan["parameter"]: plan["exemplars"]}))
        specs.append(spec)
    return specs


def _run(recipe: Recipe, opts: RunOptions, out: Path, stream: Any, device: torch.device,
         budget: dict[str, Any] | None, start: float, load_s: float, registry_uri: str) -> dict[str, Any]:
    from zoo.models import create_model

    if budget is not None:
        log.info("budget %s = %s bytes (%.3f MB)", budget["reference"]["text"], f"{budget['total_bytes']:,}",
                 budget["megabytes"])
        for key, plan in budget["methods"].items():
            log.info("budget %s: %s", key, plan["derivation"] if plan["applies"] else plan["why"])
    log.info("stream %s: %d tasks, %d classes, device %s", stream.name, len(stream.tasks), stream.num_classes, device)
    reg = _open_target_registry(registry_uri) if opts.push != "none" else None

    def new_model_at(t: int) -> torch.nn.Module:
        spec = recipe.model_at(t)
        return prepare_model(create_model(spec.architecture, stream.num_classes, **spec.args), device)

    def new_model() -> torch.nn.Module:
        return new_model_at(0)

    baseline = _fresh_model_baseline(new_model, stream, recipe.seed)
    shared: dict[Any, Any] = {"new_model_at": new_model_at}  # what the methods of this run share
    combined: dict[str, Any] = {"recipe": recipe.to_data(), "stream": stream.describe(), "device": str(device),
                                "machine": _machine(), "methods": {}}
    if budget is not None:
        combined["budget"] = budget
    for spec in budgeted(recipe, budget):
        result = _run_method(recipe, spec, stream, new_model, device, baseline, reg, opts, out, shared)
        result["timings"]["data_load_s"] = load_s
        if budget is not None:
            result["budget"] = budget["methods"][spec.key]
        combined["methods"][spec.key] = result
    combined["timings"] = {"total_s": time.perf_counter() - start}
    _write_json(out / "results.json", combined)
    plot_methods(combined, out / "methods.png", title=f"{recipe.name}: every method, stage by stage")
    return combined


def architecture_text(spec: Any) -> str:
    """A model spec as one readable name, e.g. ``convnet(in_chans=1, width=32)``."""
    return f"{spec.architecture}({', '.join(f'{k}={v}' for k, v in sorted(spec.args.items()))})"


def _inside(out: Path, *parts: str) -> Path:
    """``out / parts`` after checking that it stays inside the run folder (recipe names are validated as
    expert names already; this is the last line of defence before a write)."""
    path = out.joinpath(*parts)
    if not path.resolve().is_relative_to(out.resolve()) or path.resolve() == out.resolve():
        raise ZooError(f"run: {'/'.join(parts)} would be written outside the run folder {out}")
    return path


def _fresh_model_baseline(new_model: Any, stream: Any, seed: int) -> dict[str, list[float]]:
    """b_j for FWT: a freshly initialised model on task j, each protocol as R[j-1][j] is measured."""
    torch.manual_seed(seed)
    model = new_model().eval()
    predict = lambda x, task: model(x)  # noqa: E731
    out: dict[str, list[float]] = {"class_il": [], "task_il": []}
    for j, task in enumerate(stream.tasks):
        # R[j-1][j] is scored over the classes seen before task j (task 0: its own classes).
        accs = task_accuracies(predict, task, stream.seen_classes(max(j - 1, 0)), stream.num_classes)
        out["class_il"].append(accs["class_il"])
        out["task_il"].append(accs["task_il"])
    return out


def _run_method(recipe: Recipe, spec: Any, stream: Any, new_model: Any, device: torch.device,
                baseline: dict[str, list[float]], reg: Registry | None, opts: RunOptions, out: Path, shared: dict[Any, Any]) -> dict[str, Any]:
    ckpt_dir = _inside(out, "checkpoints", spec.key)
    _inside(out, spec.key)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    progress_file = ckpt_dir / "progress.json"
    done = json.loads(progress_file.read_text()) if progress_file.exists() else {"stages": []}
    seed_everything(recipe.seed)
    ctx = RunContext(stream=stream, new_model=new_model, training=method_training(recipe, spec), device=device,
                     shared=shared,
                     seed=recipe.seed, progress=opts.progress, architecture=recipe.model.architecture,
                     model_args=dict(recipe.model.args), new_model_at=shared["new_model_at"],
                     architecture_at=lambda t: architecture_text(recipe.model_at(t)))
    method = get_method(spec.method)(spec.params, ctx)
    try:
        writer = _tensorboard(out, spec.key) if opts.tensorboard else None
        try:
            return _run_stages(recipe, spec, stream, method, ctx, baseline, reg, out, ckpt_dir, progress_file, done,
                               opts.push, writer)
        finally:
            if writer is not None:
                writer.close()
    finally:
        method.close()


def _run_stages(recipe: Recipe, spec: Any, stream: Any, method: Any, ctx: RunContext,
                baseline: dict[str, list[float]], reg: Registry | None, out: Path, ckpt_dir: Path,
                progress_file: Path, done: dict[str, Any], push: str = "final",
                tensorboard: Any = None) -> dict[str, Any]:
    from safetensors.torch import load_file, save_file

    key, device = spec.key, ctx.device
    last = len(stream.tasks) - 1
    pushed: list[str] = []
    rows: dict[str, list[list[float]]] = {"class_il": [], "task_il": []}
    stages: list[dict[str, Any]] = []
    parent: ParentRef | None = None
    for t in range(len(stream.tasks)):
        ckpt = ckpt_dir / f"stage-{t}.safetensors"
        if t < len(done["stages"]) and ckpt.exists():
            stage = done["stages"][t]
            method.load_meta(stage.get("method_state", {}))
            method.load_state({k: v.to(device) for k, v in load_file(ckpt).items()}, t)
            log.info("%s: stage %d restored from %s", key, t, ckpt)
        else:
            t0 = time.perf_counter()
            with epoch_records(_history_sink(out, key, t, tensorboard)):
                info = method.train_stage(t)
            train_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            row = evaluate_stage(method.predictor(), stream, stream.seen_classes(t))
            eval_s = time.perf_counter() - t0
            stage = {"stage": t, "class_il": row["class_il"], "task_il": row["task_il"], "train_s": train_s,
                     "eval_s": eval_s, "info": info, "expert": None, "method_state": method.meta()}
            publish = _publisher(reg, recipe, spec, stream, method, snapshots=push == "stages" or t == last,
                                 pushed=pushed)
            card = method.publish(t, publish, parent, stage)
            stage["pushed"] = list(pushed)
            pushed.clear()
            if card is not None:
                stage["expert"] = {"id": card.id, "digest": card.digest, "registry": reg.uri}
            # Checkpoint last: a stage counts as finished only once its state, row and expert are saved.
            tmp = ckpt.with_suffix(".tmp")
            save_file({k: v.detach().contiguous().cpu() for k, v in method.state().items()}, tmp)
            os.replace(tmp, ckpt)
            done["stages"] = done["stages"][:t] + [stage]
            _write_json(progress_file, done)
            seen_avg = sum(row["class_il"][: t + 1]) / (t + 1)
            log.info("%s: stage %d trained in %.1fs, class-IL avg over seen tasks %.4f", key, t, train_s, seen_avg)
            what = stage_line(info, card)
            if what:
                log.info("%s: stage %d: %s", key, t, what)
        if stage.get("expert"):
            parent = ParentRef(stage["expert"]["id"], stage["expert"]["digest"], "base")
        stages.append(stage)
        for p in rows:
            rows[p].append(stage[p])
    tags = []
    final = stages[-1].get("expert") if stages else None
    if reg is not None and final:
        for tag in final_tags(recipe, spec):
            reg.tag(tag, final["id"])
            tags.append(tag)
    n_pushed = sum(len(s.get("pushed", [])) for s in stages)
    if reg is not None:
        log.info("%s: pushed %d model(s) to %s%s", key, n_pushed, reg.uri, f", tagged {', '.join(tags)}" if tags else "")
    fwt = PROTOCOLS if class_il_fwt_defined(stream) else ("task_il",)
    result = results_from_rows(rows, baseline, [method.learned_at(t) for t in range(len(stream.tasks))],
                               [len(task.test) for task in stream.tasks], fwt)
    mem = method.memory()
    result.update({
        "method": spec.method,
        "label": key,
        "params": method.hyperparameters(),
        "memory": memory_report(method.models(), mem["exemplars"], stream, mem["bytes"], mem.get("all_data", False)),
        "timings": {"train_s": sum(s["train_s"] for s in stages), "eval_s": sum(s["eval_s"] for s in stages),
                    "per_stage": [{"train_s": s["train_s"], "eval_s": s["eval_s"]} for s in stages]},
        "stages": [{"stage": s["stage"], "info": s["info"], "expert": s["expert"]} for s in stages],
        "registry": None if reg is None else {"uri": reg.uri, "pushed": n_pushed, "tags": tags},
    })
    if any(s["info"].get("breaks_setting") for s in stages):  # e.g. Ex-Model's replay source: real data
        result["breaks_setting"] = True
    (out / key).mkdir(exist_ok=True)
    _write_json(out / key / "results.json", {**result, "recipe": recipe.to_data()})
    plot_accuracy_matrix(result, out / key / "accuracy_matrix.png", title=f"{recipe.name}: {key}")
    return result


def _publisher(reg: Registry | None, recipe: Recipe, spec: Any, stream: Any, method: Any, *,
               snapshots: bool = True, pushed: list[str] | None = None) -> Any:
    """The function methods push models with: names, seed, method, labels and training filled in. A model
    pushed with ``role="snapshot"`` (the method's model after a stage) is skipped unless ``snapshots``;
    experts and bases always go. Pushed ids are appended to ``pushed``."""
    def publish(model: torch.nn.Module, *, suffix: str, tasks: list[tuple[int, Any]], parents: list[ParentRef],
                metrics: dict[str, float], hyperparameters: dict[str, Any] | None = None,
                role: str = "snapshot", **extra: Any) -> ExpertCard | None:
        if reg is None or (role == "snapshot" and not snapshots):
            return None
        hyper = {**method.hyperparameters(), "training": _plain(method_training(recipe, spec)),
                 # what the expert reads: a user (or timm) needs this to feed it the inputs it was trained on
                 "input": {"shape": list(stream.input_shape), **{k: v for k, v in stream.normalisation.items()}},
                 **(hyperparameters or {})}
        card = reg.save(model, name=f"{recipe.name}-{spec.key}-{suffix}",
                        tasks=[TaskSpec(i, tuple(c)) for i, c in tasks], parents=parents, method=spec.method,
                        hyperparameters=hyper, seed=recipe.seed, metrics=metrics,
                        labels=[stream.name, recipe.name], **extra)
        if pushed is not None:
            pushed.append(card.id)
        return card
    return publish


def _tensorboard(out: Path, key: str) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ZooError("--tensorboard needs TensorBoard: pip install 'expert-zoo[tensorboard]'") from None
    return SummaryWriter(str(_inside(out, "tensorboard", key)))


def _history_sink(out: Path, key: str, t: int, writer: Any = None) -> Any:
    """Where the epochs of stage ``t`` go: ``<out>/<key>/history.jsonl`` (lines of a stage trained again
    after an interruption replace the old ones) and, when given, a TensorBoard writer."""
    folder = _inside(out, key)
    folder.mkdir(exist_ok=True)
    path = folder / "history.jsonl"
    kept: list[str] = []
    if path.exists():  # a stage trained again after an interruption replaces its old lines
        kept = [line for line in path.read_text().splitlines() if _stage_of(line) < t]  # a torn line goes too
        path.write_text("".join(line + "\n" for line in kept))
    step = [len(kept)]  # TensorBoard's step: the epochs logged before this stage

    def sink(record: dict[str, Any]) -> None:
        # NaN (validation not measured that epoch) is written as null: every line is strict JSON
        row = {"method": key, "stage": t, **{k: (None if isinstance(v, float) and v != v else v)
                                              for k, v in record.items()}}
        with open(path, "a") as fh:
            fh.write(json.dumps(row, allow_nan=False) + "\n")
        if writer is not None:
            for name in ("loss", "val_accuracy", "lr", "seconds"):
                value = record.get(name)
                if isinstance(value, (int, float)) and value == value:
                    writer.add_scalar(f"{name}", value, step[0])
            writer.add_scalar("stage", t, step[0])
        step[0] += 1
    return sink


def _stage_of(line: str) -> float:
    """The stage of a history line; infinity for a line that does not parse (a write cut short)."""
    try:
        stage = json.loads(line).get("stage")
    except (ValueError, AttributeError):
        return float("inf")
    return stage if isinstance(stage, int) else float("inf")


def stage_line(info: dict[str, Any], card: Any) -> str:
    """What a stage did, in one line for the log (BMC's batch, experts and base; Model Zoo's group and
    weights; a memory's size; MEMO's blocks)."""
    parts = []
    if "deferred" in info:
        return str(info["deferred"])
    if "batch" in info:
        parts.append(f"batch of tasks {','.join(map(str, info['batch']))} -> {len(info.get('experts', []))} experts"
                     + (f" -> base {card.id}" if card is not None else " -> base (not pushed)"))
    if "group" in info:
        parts.append(f"group {','.join(map(str, info['group']))}")
    if "weights" in info:
        parts.append("task weights " + " ".join(f"{k}:{v:.2f}" for k, v in info["weights"].items()))
    if "blocks" in info:
        parts.append(f"{info['blocks']} specialized block(s)")
    if "memory" in info:
        parts.append(f"memory {info['memory']}")
    val = info.get("val_accuracy")
    if isinstance(val, float) and val == val:  # the validation accuracy the method's training targets
        parts.append(f"val acc {val:.4f}")
    if card is not None and "batch" not in info:
        parts.append(f"pushed {card.id}")
    return "; ".join(parts)


def final_tags(recipe: Recipe, spec: Any) -> list[str]:
    """The tags a run puts on a method's final model: ``<run>/<method>:final``, and ``base:latest`` for
    BMC's final base."""
    return [f"{recipe.name}/{spec.key}:final"] + (["base:latest"] if spec.method == "bmc" else [])


def _plain(obj: Any) -> Any:
    from .schema import to_data

    return to_data(obj)


def _machine() -> dict[str, Any]:
    from .threads import usable_cores

    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpus": os.cpu_count(), "usable_cores": usable_cores(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def results_table(results: dict[str, Any]) -> str:
    """A plain-text table of every method's final average accuracy, forgetting and time, per protocol."""
    header = ["method", "class-IL acc", "class-IL forget", "class-IL BWT", "task-IL acc", "task-IL forget",
              "memory (ex.)", "train s"]
    rows = [header]
    cells = [("final_average_accuracy", "class_il"), ("forgetting", "class_il"), ("bwt", "class_il"),
             ("final_average_accuracy", "task_il"), ("forgetting", "task_il")]
    for key, r in results["methods"].items():
        rows.append([key, *(_cell(r[name][p]) for name, p in cells), f"{r['memory']['exemplars']}",
                     f"{r['timings']['train_s']:.1f}"])
    return text_table(rows)


def text_table(rows: list[list[str]]) -> str:
    """Rows of cells (the first one the header) as aligned text: first column left, the others right, a
    dashed rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
