"""The ``zoo`` command line: a thin shell over the library (parse, call, print).

Every failure prints exactly one line ``zoo: error: ...`` on stderr and exits non-zero; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import click

from registry import Query, open_registry
from registry.base import MetricFilter, Registry
from registry.card import ExpertCard
from registry.errors import ZooError
from registry.lineage import task_text
from registry.names import validate_tag
from registry.settings import default_registry_uri


class ZooGroup(click.Group):
    """A click group that turns every error into one ``zoo: error:`` line and a non-zero exit."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **kwargs: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv
        try:
            return super().main(args=argv, prog_name=prog_name or "zoo", standalone_mode=False, **kwargs)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            _fail("aborted", 130)
        except click.UsageError as e:
            hint = f" (see 'zoo {e.ctx.info_name} --help')" if e.ctx and e.ctx.parent else " (see 'zoo --help')"
            _fail(e.format_message() + hint, 2)
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code or 1)
        except (ZooError, OSError, ValueError, KeyError) as e:
            if debug:
                raise
            _fail(_one_line(e), 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as e:  # a bug: still one line, with the way to see more
            if debug:
                raise
            _fail(f"internal error: {type(e).__name__}: {_one_line(e)} (run with --debug for the traceback)", 1)


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, KeyError) and not isinstance(e, ZooError) and text.startswith("'"):
        text = text.strip("'")
    if isinstance(e, OSError) and e.filename:
        text = f"{e.filename}: {e.strerror or text}"
    return (text.splitlines() or [type(e).__name__])[0]


def _fail(message: str, code: int) -> None:
    click.echo(f"zoo: error: {printable(message)}", err=True)
    sys.exit(code)


_UNPRINTABLE = None


def printable(text: str) -> str:
    """``text`` with control characters (terminal escapes, newlines, lone surrogates) shown as ``\\xNN`` /
    ``\\uNNNN`` escapes: what a card or an argument holds must never drive the user's terminal."""
    import re

    global _UNPRINTABLE
    if _UNPRINTABLE is None:
        _UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), text)


def _json(data: Any, **kwargs: Any) -> str:
    """JSON for stdout: strict (never NaN or Infinity, which are not JSON)."""
    return json.dumps(data, indent=2, allow_nan=False, **kwargs)


class _FiniteFloat(click.ParamType):
    """A finite, non-negative number (NaN, infinities and negative rates are refused at the command line)."""

    name = "number"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        import math

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number < 0:
            self.fail(f"{value!r} must be a finite number >= 0", param, ctx)
        return number


FINITE = _FiniteFloat()


# --- shared options ----------------------------------------------------------------------------------------------

def registry_option(fn: Callable) -> Callable:
    """``--registry URI`` (default: $ZOO_REGISTRY or ~/.cache/zoo/registry)."""
    return click.option("--registry", "-r", "registry_uri", metavar="URI", default=None,
                        help="Registry: a folder or hf://ORG/REPO[@REVISION] (default: $ZOO_REGISTRY or "
                             "~/.cache/zoo/registry).")(fn)


def data_root_option(fn: Callable) -> Callable:
    """``--data-root DIR``: where a recipe's data sets are looked for first (sets ``stream.data_root``)."""
    return click.option("--data-root", "data_root", type=click.Path(path_type=Path), default=None,
                        help="Folder holding the data sets (CIFAR, MNIST, Tiny-ImageNet...): the recipe's "
                             "stream.data_root (default: $ZOO_DATA_ROOT or ~/.cache/zoo/data).")(fn)


def _load_recipe(path: Path, data_root: Path | None = None, sets: tuple[str, ...] = ()) -> Any:
    from zoo.recipe import load_recipe

    overrides = _overrides(sets)
    if data_root is not None:
        overrides["stream.data_root"] = str(data_root)
    return load_recipe(path, overrides)


def filter_options(fn: Callable | None = None, *, method_flag: str = "--method") -> Callable:
    """Filters that select experts: task, architecture, parent, tag, name, method, label, metric. A command
    whose own ``--method`` means something else (``zoo consolidate``) names the filter ``method_flag``."""
    if fn is None:
        return lambda f: filter_options(f, method_flag=method_flag)
    for opt in reversed([
        click.option("--task", type=int, multiple=True, help="Experts trained on this global task id."),
        click.option("--arch", "architecture", multiple=True, help="Experts of this architecture."),
        click.option("--parent", multiple=True, help="Experts derived from this expert id."),
        click.option("--tag", multiple=True, help="The expert this registry tag points at."),
        click.option("--name", multiple=True, help="Experts with this name."),
        click.option(method_flag, "method", multiple=True, help="Experts trained with this method."),
        click.option("--label", multiple=True, help="Experts carrying this card label."),
        click.option("--metric", multiple=True,
                     help="A metric condition on a card's metric, named for its split, such as "
                          "'test_class_il_accuracy>=0.9' or 'val_accuracy>0.8'."),
    ]):
        fn = opt(fn)
    return fn


FILTERS_HELP = "Every filter may repeat: an expert matches any value of a filter and every filter given."


def _query(**filters: Any) -> Query | None:
    """The registry query of the filter options: OR within a repeated filter, AND across filters."""
    given = {k: tuple(v) for k, v in filters.items() if v}
    if not given:
        return None
    if "metric" in given:
        given["metric"] = tuple(MetricFilter.parse(m) for m in given["metric"])
    return Query(**given)


def _filtered(filters: dict[str, Any]) -> bool:
    return any(bool(v) for v in filters.values())


def _open(uri: str | None, create: bool = False, **kwargs: Any) -> Registry:
    uri = uri or default_registry_uri()
    if uri.startswith("hf://"):
        return open_registry(uri, **kwargs)
    reg = open_registry(uri, create=create)
    for expert_id, why in sorted(getattr(reg, "unreadable", {}).items()):
        click.echo(printable(f"zoo: warning: {reg.uri}/experts/{expert_id} cannot be indexed ({why}); "
                             f"`zoo rm {expert_id}` or `zoo gc` removes it"), err=True)
    return reg


@contextmanager
def _bytes_bar(total: int, desc: str, quiet: bool) -> Iterator[Callable[[int], Any] | None]:
    if quiet or total < 8 * 1024 * 1024:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr) as bar:
        yield bar.update


# --- the group ---------------------------------------------------------------------------------------------------

@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or chatter; results and errors only.")
@click.option("--debug", is_flag=True, help="Show a traceback on errors.")
@click.option("--threads", metavar="N|auto|torch", default=None,
              help="CPU threads for torch: a number, auto (one per idle usable core; the default, or "
                   "$ZOO_THREADS) or torch (torch's own default).")
@click.version_option(package_name="expert-zoo", message="zoo %(version)s")
@click.pass_context
def main(ctx: click.Context, quiet: bool, debug: bool, threads: str | None) -> None:
    """zoo: continual and multi-task learning with expert models.

    Experts live in a registry: a local folder (default ~/.cache/zoo/registry, or $ZOO_REGISTRY) or a
    Hugging Face Hub repo (hf://ORG/REPO[@REVISION]). An expert is named by its id, a unique id prefix, a tag
    (such as base:latest) or its name.
    """
    ctx.obj = {"quiet": quiet}
    if threads is not None:
        from zoo.threads import choose_threads, ENV

        choose_threads(threads)  # a bad value is one error line, before any work
        os.environ[ENV] = threads  # read when the work starts (run_recipe sizes it to the model)
    from huggingface_hub.utils import disable_progress_bars, logging as hf_logging

    if not debug:
        # huggingface_hub logs every retry of a failing request; zoo reports the outcome in one line.
        hf_logging.set_verbosity_error()
    if quiet:
        disable_progress_bars()


def _quiet() -> bool:
    return bool(click.get_current_context().find_root().obj.get("quiet"))


def _say(message: str) -> None:
    if not _quiet():
        click.echo(message, err=True)


# --- registry commands -------------------------------------------------------------------------------------------

def _summary(card: ExpertCard, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "id": card.id, "name": card.name, "architecture": card.architecture, "tasks": card.task_ids,
        "num_classes": card.num_classes, "method": card.method,
        "parents": [{"id": p.id, "role": p.role} for p in card.parents], "metrics": card.metrics,
        "tags": sorted(t for t, i in tags.items() if i == card.id), "created_at": card.created_at,
    }


@main.command("list")
@registry_option
@filter_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def list_cmd(registry_uri: str | None, as_json: bool, **filters: Any) -> None:
    """List the experts in a registry, optionally filtered (an empty or not yet created registry lists
    nothing). The METRIC column is each card's headline metric."""
    from registry.errors import RegistryNotFoundError

    try:
        reg = _open(registry_uri)
    except RegistryNotFoundError:
        reg = None
    cards = reg.find_checked(_query(**filters)) if reg is not None else []
    tags = reg.tags() if reg is not None else {}
    rows = [_summary(c, tags) for c in cards]
    if as_json:
        click.echo(_json(rows))
        return
    if not rows:
        where = reg.uri if reg is not None else (registry_uri or default_registry_uri())
        _say(f"no experts in {where}" + (" match" if _filtered(filters) else ""))
    table = [["ID", "NAME", "ARCH", "TASKS", "METHOD", "METRIC", "TAGS", "CREATED"]] + [
        [r["id"][:12], r["name"], r["architecture"], task_text(r["tasks"]), r["method"], _headline(r["metrics"]),
         ",".join(r["tags"]), r["created_at"][:19]] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo(printable("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()))


HEADLINE_METRICS = ("test_class_il_accuracy", "test_task_il_accuracy", "val_accuracy", "accuracy")


def _headline(metrics: dict[str, Any]) -> str:
    """A card's headline metric as ``name=value``: class-IL test accuracy when recorded, else the first of
    :data:`HEADLINE_METRICS`, else the first recorded name."""
    names = [k for k in HEADLINE_METRICS if metrics.get(k) is not None] or sorted(
        k for k, v in metrics.items() if v is not None)
    if not names:
        return "-"
    value = metrics[names[0]]
    return f"{names[0]}={value:.4f}" if isinstance(value, float) else f"{names[0]}={value}"


@main.command()
@click.argument("ref")
@registry_option
@click.option("--json", "as_json", is_flag=True, help="Print the full card (zoo.json) as JSON.")
@click.option("--lineage", is_flag=True, help="Print the expert's ancestry as a tree of names instead.")
def show(ref: str, registry_uri: str | None, as_json: bool, lineage: bool) -> None:
    """Show one expert's card: tasks, lineage, method, metrics, files."""
    reg = _open(registry_uri)
    card = reg.card(ref)
    if lineage:
        from registry.lineage import lineage_tree

        click.echo("\n".join(printable(line) for line in lineage_tree(reg, card)))
        return
    tags = sorted(t for t, i in reg.tags().items() if i == card.id)
    if as_json:
        click.echo(_json({**card.to_dict(), "registry_tags": tags}, sort_keys=True))
        return
    lines = [
        f"id            {card.id}",
        f"name          {card.name}",
        f"architecture  {card.architecture} ({card.num_classes} outputs)",
        "tasks         " + ("; ".join(f"{t.id}: classes {list(t.classes)}" for t in card.tasks) or "-"),
        f"method        {card.method}" + (f" (seed {card.seed})" if card.seed is not None else ""),
        "parents       " + (", ".join(f"{p.id} ({p.role})" for p in card.parents) or "-"),
        "tags          " + (", ".join(tags) or "-"),
        f"created       {card.created_at} (zoo {card.zoo_version})",
    ]
    if card.hyperparameters:
        lines.append("hyperparams   " + ", ".join(f"{k}={v}" for k, v in sorted(card.hyperparameters.items())))
    if card.metrics:
        lines.append("metrics       " + ", ".join(f"{k}={'null' if v is None else f'{v:.4f}'}"
                                                  for k, v in sorted(card.metrics.items())))
    if card.buffer:
        lines.append(f"buffer        {card.buffer.get('num_samples')} samples")
    lines.append("files")
    lines += [f"  {name:<40} {rec.size:>12,d} B  sha256 {rec.sha256[:16]}" for name, rec in card.files.items()]
    click.echo("\n".join(printable(line) for line in lines))


@main.command()
@click.argument("refs", nargs=-1)
@registry_option
def verify(refs: tuple[str, ...], registry_uri: str | None) -> None:
    """Check experts' files against their sha256 and re-derive their ids (all experts by default)."""
    reg = _open(registry_uri)
    problems = reg.verify(list(refs) or None)
    for p in problems:
        click.echo(f"FAIL {p}")
    if problems:
        raise ZooError(f"{len(problems)} expert(s) failed verification in {reg.uri}")
    n = len(refs) if refs else len(reg.find())
    click.echo(f"ok: {n} expert(s) verified in {reg.uri}")


@main.command()
@click.argument("refs", nargs=-1, required=True)
@registry_option
def rm(refs: tuple[str, ...], registry_uri: str | None) -> None:
    """Remove experts (and the tags that point at them)."""
    reg = _open(registry_uri)
    unreadable = getattr(reg, "unreadable", {})
    # Resolve all first: nothing is removed if one is unknown. A folder the index could not take is named by id.
    targets = [(r, None) if r in unreadable else (None, reg.card(r)) for r in refs]
    for folder, card in targets:
        if card is None:
            reg.remove(folder)
            click.echo(f"removed unreadable folder {folder}")
        else:
            reg.remove(card.id)
            click.echo(f"removed {card.name} ({card.id})")


@main.command()
@click.argument("tag", required=False)
@click.argument("ref", required=False)
@registry_option
@click.option("--delete", "-d", is_flag=True, help="Delete TAG instead of setting it.")
def tag(tag: str | None, ref: str | None, registry_uri: str | None, delete: bool) -> None:
    """Point TAG (such as base:latest) at REF; with no arguments, list the tags."""
    reg = _open(registry_uri)
    if tag is None:
        tags = reg.tags()
        if not tags:
            _say(f"no tags in {reg.uri}")
        for name, expert_id in tags.items():
            click.echo(f"{printable(name)}\t{printable(expert_id)}")
        return
    if delete:
        reg.untag(tag)
        click.echo(f"deleted tag {tag}")
        return
    if ref is None:
        raise click.UsageError("missing REF: zoo tag TAG REF (or zoo tag --delete TAG)")
    card = reg.tag(tag, ref)
    click.echo(f"{tag} -> {card.name} ({card.id})")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@registry_option
def add(paths: tuple[Path, ...], registry_uri: str | None) -> None:
    """Add expert folders (config.json, model.safetensors, zoo.json, ...) to a registry."""
    from registry import Expert

    experts = [Expert.load(p) for p in paths]
    for e in experts:  # every folder fully checked (bytes, config, id from content) before any is stored
        e.verify(deep=True)
    reg = _open(registry_uri, create=True)
    for e in experts:
        if e.id in {c.id for c in reg.find(Query(name=e.name))}:
            click.echo(f"already present: {e.name} ({e.id})")
            continue
        total = sum(r.size for r in e.card.files.values())
        with _bytes_bar(total, e.name, _quiet()) as bar:
            card = reg.add(e, progress=bar)
        click.echo(f"added {card.name} ({card.id})")


@main.command()
@click.argument("refs", nargs=-1)
@click.option("--to", "dest", required=True, metavar="URI", help="Destination: hf://ORG/REPO[@BRANCH] or a folder.")
@registry_option
@filter_options
@click.option("--private", is_flag=True, help="Create the Hub repo as private if it does not exist.")
@click.option("--message", "-m", help="Commit message (default: names what is added).")
@click.option("--git-tag", help="Also tag the resulting Hub commit, so hf://ORG/REPO@TAG pins it.")
def push(refs: tuple[str, ...], dest: str, registry_uri: str | None, private: bool, message: str | None,
         git_tag: str | None, **filters: Any) -> None:
    """Copy experts (all by default, or REFS / filters) from the registry to another (usually the Hub).

    Only experts the destination lacks are uploaded, in one commit. Registry tags that point at the selected
    experts go along (as with pull), and each tag set or moved at the destination is printed.
    """
    src = _open(registry_uri)
    cards = src.select(refs, _query(**filters))
    if not cards:
        raise ZooError(f"nothing to push: no experts selected in {src.uri}")
    if dest.startswith("hf://"):
        dst = open_registry(dest, private=private)
    elif private or message or git_tag:
        raise click.UsageError("--private, --message and --git-tag apply to hf:// destinations only")
    else:
        dst = _open(dest, create=True)
    done = src.copy_to(dst, cards, message=message, git_tag=git_tag)
    for line in done.announce():
        click.echo(line)
    click.echo(f"pushed {len(done.added)} new expert(s) to {dst.uri} ({len(done.selected) - len(done.added)} "
               f"already there)")


@main.command()
@click.argument("ref")
@click.option("--to", "dest", required=True, metavar="URI", help="The model repo: hf://ORG/REPO[@BRANCH].")
@registry_option
@click.option("--private", is_flag=True, help="Create the repo as private if it does not exist.")
@click.option("--message", "-m", help="Commit message (default: names the expert).")
@click.option("--git-tag", help="Also tag the commit.")
def export(ref: str, dest: str, registry_uri: str | None, private: bool, message: str | None,
           git_tag: str | None) -> None:
    """Publish one expert as a standalone Hub model repo (its files at the repo root).

    timm then loads a single-head timm expert with timm.create_model("hf-hub:ORG/REPO", pretrained=True), and
    zoo reads the repo back as a one-expert registry (zoo pull hf://ORG/REPO).
    """
    from registry.uri import is_hub_uri

    if not is_hub_uri(dest):
        raise click.UsageError("--to must be a Hub repo: hf://ORG/REPO")
    expert = _open(registry_uri).get(ref)
    import timm

    from zoo.models import is_zoo_model

    arch = expert.card.architecture
    if is_zoo_model(arch) or not timm.is_model(arch):
        _say(f"zoo: warning: timm cannot build {arch!r} ({'a zoo architecture' if is_zoo_model(arch) else 'unknown to timm'}); "
             f"the repo loads with zoo (Expert.load / zoo pull), not with timm.create_model")
    repo = open_registry(dest, private=private)
    repo.export(expert, message=message, git_tag=git_tag)
    click.echo(f"exported {expert.name} ({expert.id}) to {repo.uri}")


@main.command()
@click.argument("source", metavar="URI")
@click.argument("refs", nargs=-1)
@registry_option
@filter_options
def pull(source: str, refs: tuple[str, ...], registry_uri: str | None, **filters: Any) -> None:
    """Copy experts (all by default, or REFS / filters) from URI (usually hf://ORG/REPO[@REV]) into the registry.

    Only the selected experts' files are downloaded, and every file is checked against its sha256. Tags
    that point at the selected experts come along (as with push); each local tag set or moved is printed.
    """
    src = _open(source)
    dst = _open(registry_uri, create=True)
    if src.uri == dst.uri:
        raise ZooError("source and destination are the same registry")
    cards = src.select(refs, _query(**filters))
    if not cards:
        raise ZooError(f"nothing to pull: no experts selected in {src.uri}")
    done = src.copy_to(dst, cards)
    for line in done.announce():
        click.echo(line)
    click.echo(f"pulled {len(done.added)} new expert(s) from {src.uri} into {dst.uri} "
               f"({len(done.selected) - len(done.added)} already there)")


# --- running recipes ----------------------------------------------------------------------------------------------

def _overrides(items: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    from zoo.recipe import load_yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = load_yaml(value)
        except yaml.YAMLError:
            raise click.UsageError(f"--set {key}: the value is not valid YAML") from None
    return out


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Run folder (default: runs/<recipe name>).")
@registry_option
@click.option("--device", help="cpu, cuda, cuda:1 ... (default: the recipe's, else auto).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe value, e.g. training.epochs=2.")
@data_root_option
@click.option("--dry-run", is_flag=True, help="Validate the recipe, print it resolved, and stop.")
@click.option("--no-resume", is_flag=True, help="Refuse to continue a run already in --out.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out (its files only) instead of resuming.")
@click.option("--tensorboard", is_flag=True, help="Also log every epoch to TensorBoard (<out>/tensorboard/<method>).")
@click.option("--push", "push_mode", type=click.Choice(["final", "stages", "none"]), default="final", show_default=True,
              help="What goes to the registry: each method's final model plus the experts and bases methods "
                   "produce (final), also every stage's snapshot (stages), or nothing (none).")
@click.option("--budgets", metavar="V1,V2,...",
              help="Run a budget sweep: the recipe at each memory budget (in the unit of its budget: field; "
                   "without one, exemplars of the reference 'B exemplars + one backbone per task').")
def run(recipe: Path, out: Path | None, registry_uri: str | None, device: str | None, sets: tuple[str, ...],
        data_root: Path | None, dry_run: bool, no_resume: bool, overwrite: bool, tensorboard: bool, push_mode: str,
        budgets: str | None) -> None:
    """Run RECIPE (a YAML file): train every method stage by stage, evaluate, push experts, write results.

    The run folder gets results.json, an accuracy-matrix PNG per method, the resolved recipe and a log;
    running again into the same folder resumes after the last finished stage. With --budgets (or a
    recipe's budget.sweep) every budget gets its own run folder inside --out, and sweep.json / sweep.png
    hold the accuracy-versus-memory curves and AUC-A / AUC-L.
    """
    from zoo.recipe import dump_recipe, load_recipe

    parsed = _load_recipe(recipe, data_root, sets)
    values = _budget_values(budgets) if budgets is not None else list(parsed.budget.sweep if parsed.budget else [])
    if values:
        from zoo.sweep import sweep_recipes

        sweep_recipes(parsed, values)  # every budget value is checked before anything runs
    if dry_run:
        click.echo(dump_recipe(parsed), nl=False)
        return
    from zoo.runner import RunOptions, results_table, run_recipe

    out = out or Path("runs") / parsed.name
    if not _quiet():
        import logging

        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("zoo: %(message)s"))
        logging.getLogger("zoo").addHandler(console)
    if no_resume and overwrite:
        raise click.UsageError("--no-resume and --overwrite contradict each other: give one")
    opts = RunOptions(out=out, registry=registry_uri, device=device, progress=not _quiet(), resume=not no_resume,
                      overwrite=overwrite, push=push_mode, tensorboard=tensorboard)
    if values:
        from zoo.sweep import run_sweep, sweep_table

        summary = run_sweep(parsed, values, opts)
        click.echo(sweep_table(summary))
        click.echo(f"\nsweep: {out / 'sweep.json'}, {out / 'sweep.png'}")
        return
    results = run_recipe(parsed, opts)
    if results.get("already_complete"):
        _say(f"zoo: {out} is already complete; showing its results (--overwrite runs it again)")
    click.echo(results_table(results))
    pushed = [r["registry"] for r in results["methods"].values() if r.get("registry")]
    if pushed:
        click.echo(f"\npushed {sum(p['pushed'] for p in pushed)} model(s) to {pushed[0]['uri']} "
                   f"(tags: {', '.join(t for p in pushed for t in p['tags']) or 'none'})")
    click.echo(f"\nresults: {out / 'results.json'}")


def _budget_values(text: str) -> list[float]:
    values = []
    for part in text.split(","):
        try:
            v = float(part.strip())
        except ValueError:
            raise click.UsageError(f"--budgets expects numbers separated by commas, got {part.strip()!r}") from None
        values.append(int(v) if v.is_integer() else v)
    return values


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise click.UsageError(f"--input-shape expects integers such as 1,28,28, got {text!r}") from None
    if not shape or any(d < 1 for d in shape):
        raise click.UsageError(f"--input-shape expects positive integers such as 1,28,28, got {text!r}")
    return shape


def _architecture(name: str, args: tuple[str, ...] = (), flag: str = "") -> dict[str, Any]:
    """Check an architecture named on the command line and its ``KEY=VALUE`` arguments (known name, safe and
    fitting arguments: the rules of :func:`zoo.models.validate_model_args`); return the arguments."""
    from zoo.models import is_known_architecture, validate_model_args

    if not is_known_architecture(name):
        raise ZooError(f"unknown architecture {name!r}{' for ' + flag if flag else ''} "
                       f"(a zoo model or a timm model name)")
    return validate_model_args(name, _overrides(args))


def _upgrade(how: str, base_ref: str | None, student_arch: str | None, student_args: tuple[str, ...],
             recipe_path: Path | None, registry_uri: str | None, dest: str | None, new_name: str | None,
             device: str | None, seed: int, filters: dict[str, Any]) -> tuple[ExpertCard, Registry]:
    """HCL: a registry model as the teacher of a fresh architecture on one task of a recipe's stream."""
    from zoo.methods.hcl import HCLParams, upgrade_from_registry
    from zoo.recipe import load_recipe

    if base_ref is None or student_arch is None or recipe_path is None or not filters.get("task"):
        raise click.UsageError(f"--method {how} needs --base, --student-arch, --recipe and --task N")
    if len(filters["task"]) > 1:
        raise click.UsageError(f"--method {how} upgrades on one task: give --task once")
    if any(v for k, v in filters.items() if k != "task"):
        raise click.UsageError(f"--method {how} selects no experts: filters other than --task do not apply")
    args = _architecture(student_arch, student_args, "--student-arch")
    recipe = load_recipe(recipe_path)
    reg = _open(registry_uri)
    target = _open(dest, create=True) if dest else None
    card = upgrade_from_registry(reg, base_ref, student_arch, recipe, int(filters["task"][0]), HCLParams(variant=how),
                                 student_args=args, name=new_name, target=target, device=device, seed=seed,
                                 progress=not _quiet())
    return card, (target or reg)


def _distill(reg: Registry, experts: list[str], base_id: str | None, dest: str | None, new_name: str | None,
             source: str, student_arch: str | None, shape: tuple[int, ...] | None, aux_dataset: str | None,
             buffer_size: int, cfg: Any, inversion_steps: int, device: str | None,
             seed: int) -> tuple[ExpertCard, Registry]:
    import torch

    from zoo.distill import distill_registry_experts
    from zoo.synthetic import InversionConfig

    if student_arch is not None:
        _architecture(student_arch, flag="--student-arch")
    aux = None
    if source == "aux":
        if aux_dataset is None:
            raise click.UsageError("--source aux needs --aux DATASET")
        from zoo.data import build_stream

        aux = torch.cat([t.train.x for t in build_stream({"dataset": aux_dataset}).tasks])
    target = _open(dest, create=True) if dest else None
    card = distill_registry_experts(
        reg, experts, cfg, source=source, inversion=InversionConfig(steps=inversion_steps), buffer_size=buffer_size,
        base_ref=base_id, student_arch=student_arch, input_shape=shape, aux_inputs=aux, name=new_name, target=target,
        device=device, seed=seed, progress=not _quiet())
    return card, (target or reg)


@main.command("eval")
@click.argument("refs", nargs=-1)
@click.option("--recipe", "recipe_path", required=True, type=click.Path(path_type=Path),
              help="The recipe whose stream (test splits) to evaluate on.")
@registry_option
@filter_options
@data_root_option
@click.option("--device", help="cpu, cuda, ... (default: auto).")
@click.option("--json", "as_json", is_flag=True, help="Print the per-task accuracies as JSON.")
def eval_cmd(refs: tuple[str, ...], recipe_path: Path, registry_uri: str | None, device: str | None,
             as_json: bool, data_root: Path | None, **filters: Any) -> None:
    """Evaluate registry experts (REFS and/or those the filters select: one model, or several as a zoo) on a
    recipe's task stream."""
    from zoo.evaluate import evaluate_experts
    from zoo.recipe import load_recipe

    query = _query(**filters)
    if not refs and query is None:
        raise click.UsageError("name the experts to evaluate (REFS) or select them with filters such as --task")
    recipe = _load_recipe(recipe_path, data_root)
    reg = _open(registry_uri)
    cards = reg.select(refs, query)
    if not cards:
        raise ZooError(f"nothing to evaluate: no experts selected in {reg.uri}")
    report = evaluate_experts([reg.get(c.id) for c in cards], recipe, device=device)
    if as_json:
        click.echo(_json(report))
        return
    click.echo(f"{'task':>4}  {'classes':<20} {'class-IL':>8} {'task-IL':>8}")
    for row in report["tasks"]:
        click.echo(f"{row['task']:>4}  {task_text(row['classes']):<20} {row['class_il']:>8.4f} {row['task_il']:>8.4f}")
    click.echo(f"{'mean':>4}  {'':<20} {report['average']['class_il']:>8.4f} {report['average']['task_il']:>8.4f}")


@main.command()
@click.option("--method", "how", type=click.Choice(["bmc", "exmodel", "qdi", "distil"]), default="bmc",
              show_default=True, help="bmc: batched consolidation from the experts' buffers; exmodel: data-free "
                                      "distillation; qdi / distil: HCL's upgrade of --base to --student-arch on "
                                      "one task of --recipe.")
@click.option("--base", "base_ref", help="The base model to consolidate into (id, name, tag); required for bmc, "
                                         "the starting student for exmodel.")
@click.option("--experts", "expert_refs", multiple=True, help="Experts to consolidate (repeat, or use filters).")
@click.option("--memory", "memory_refs", multiple=True, help="Earlier experts whose buffers form the memory.")
@registry_option
@filter_options(method_flag="--trained-with")
@click.option("--to", "dest", metavar="URI", help="Registry to write the new base to (default: --registry).")
@click.option("--as", "new_name", metavar="NAME", help="Name of the new base (default: <base name>-bmc).")
@click.option("--tag-as", "new_tag", metavar="TAG", help="Point this tag (e.g. base:latest) at the new base.")
@click.option("--epochs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=FINITE, default=0.01, show_default=True)
@click.option("--lambda-d", type=FINITE, default=1.0, show_default=True, help="Weight of the feature distillation.")
@click.option("--teacher", type=click.Choice(["stored", "live"]), default="stored", show_default=True)
@click.option("--memory-size", type=click.IntRange(min=1), default=10000, show_default=True)
@click.option("--weight-decay", type=FINITE, default=0.01, show_default=True, help="AdamW weight decay.")
@click.option("--patience", type=click.IntRange(min=0), default=None,
              help="Stop after this many epochs without a better validation loss (default: run every epoch).")
@click.option("--restore-best", is_flag=True, help="Keep the best validation epoch's weights, not the last.")
@click.option("--source", type=click.Choice(["inversion", "noise", "aux"]), default="inversion", show_default=True,
              help="exmodel: where the synthetic inputs come from.")
@click.option("--student-arch", help="exmodel: the student's architecture (default: the first expert's); "
                                     "qdi / distil: the new architecture.")
@click.option("--student-arg", "student_args", multiple=True, metavar="KEY=VALUE",
              help="qdi / distil: an argument of the new architecture (repeat).")
@click.option("--recipe", "recipe_path", type=click.Path(path_type=Path),
              help="qdi / distil: the recipe whose stream holds the task (--task N) to learn.")
@click.option("--input-shape", help="exmodel: the input shape, e.g. 1,28,28 (default: from the experts' cards).")
@click.option("--aux", "aux_dataset", help="exmodel --source aux: the auxiliary data set (e.g. digits).")
@click.option("--buffer-size", type=click.IntRange(min=1), default=5000, show_default=True,
              help="exmodel: synthetic samples kept in all.")
@click.option("--iterations", type=click.IntRange(min=1), default=2000, show_default=True,
              help="exmodel: student steps per expert.")
@click.option("--distill-lr", type=FINITE, default=0.1, show_default=True, help="exmodel: the student's SGD lr.")
@click.option("--inversion-steps", type=click.IntRange(min=1), default=500, show_default=True,
              help="exmodel --source inversion: optimisation steps.")
@click.option("--loss", type=click.Choice(["mse", "kd"]), default="mse", show_default=True, help="exmodel: loss.")
@click.option("--bias-normalization", is_flag=True, help="exmodel: centre each model's logits before combining.")
@click.option("--device", help="cpu, cuda, ... (default: auto).")
@click.option("--seed", type=int, default=0, show_default=True)
def consolidate(how: str, base_ref: str | None, expert_refs: tuple[str, ...], memory_refs: tuple[str, ...],
                registry_uri: str | None, dest: str | None, new_name: str | None, new_tag: str | None, epochs: int,
                batch_size: int, lr: float, lambda_d: float, teacher: str, memory_size: int, weight_decay: float,
                patience: int | None, restore_best: bool, source: str, student_arch: str | None,
                student_args: tuple[str, ...], recipe_path: Path | None,
                input_shape: str | None, aux_dataset: str | None, buffer_size: int, iterations: int, distill_lr: float,
                inversion_steps: int, loss: str, bias_normalization: bool, device: str | None, seed: int,
                **filters: Any) -> None:
    """Build a new base model from registry experts.

    --method bmc (default): BMC's batched consolidation of the experts' buffers into --base.
    --method exmodel: Ex-Model distillation without any data: a student (--base, or a fresh --student-arch)
    learns the experts in task order from synthetic inputs (--source inversion|noise|aux); the experts may
    have different architectures. Experts are named with --experts and/or selected with filters (e.g.
    --task 3; --trained-with selects by the experts' training method). The result is written with its
    lineage (parents: the base and every expert) and every setting in its card.
    """
    from zoo.consolidate import ConsolidationConfig, consolidate_experts

    if new_tag is not None:
        validate_tag(new_tag)  # before any work: a bad tag must not leave a new base behind
    shape = _shape(input_shape) if input_shape else None
    if how in ("qdi", "distil"):
        card, out = _upgrade(how, base_ref, student_arch, student_args, recipe_path, registry_uri, dest, new_name,
                             device, seed, filters)
        if new_tag:
            out.tag(new_tag, card.id)
        click.echo(f"upgraded {base_ref} to {card.architecture} on task {filters['task'][0]}: {card.name} ({card.id}) "
                   f"in {out.uri}")
        return
    if how == "bmc" and base_ref is None:
        raise click.UsageError("--method bmc needs --base (the base model to consolidate into)")
    reg = _open(registry_uri)
    query = _query(**filters)
    if not expert_refs and query is None:
        raise click.UsageError("name experts with --experts or select them with a filter such as --task")
    base_id = reg.card(base_ref).id if base_ref else None
    experts = [c.id for c in reg.select(expert_refs, query) if c.id != base_id]
    if how == "exmodel":
        from zoo.distill import DistillConfig

        cfg_d = DistillConfig(iterations=iterations, lr=distill_lr, loss=loss, bias_normalization=bias_normalization)
        card, out = _distill(reg, experts, base_id, dest, new_name, source, student_arch, shape, aux_dataset,
                             buffer_size, cfg_d, inversion_steps, device, seed)
        if new_tag:
            out.tag(new_tag, card.id)
        click.echo(f"distilled {len(experts)} expert(s) into {card.name} ({card.id}) in {out.uri}")
        return
    cfg = ConsolidationConfig(epochs=epochs, batch_size=batch_size, lr=lr, lambda_d=lambda_d, teacher=teacher,
                              weight_decay=weight_decay, patience=patience, restore_best=restore_best)
    target = _open(dest, create=True) if dest else None
    card = consolidate_experts(reg, base_id, experts, cfg, memory_refs=memory_refs, memory_size=memory_size,
                               name=new_name, target=target, device=device, seed=seed, progress=not _quiet())
    out = target or reg
    if new_tag:
        out.tag(new_tag, card.id)
    click.echo(f"consolidated {len(experts)} expert(s) into {card.name} ({card.id}) in {out.uri}")


@main.command()
@click.argument("refs", nargs=-1)
@click.option("--recipe", "recipe_path", required=True, type=click.Path(path_type=Path),
              help="The recipe whose task stream the zoo is scored on.")
@registry_option
@filter_options
@click.option("--k", type=click.IntRange(min=1), default=5, show_default=True, help="Group size: the new task + up to k-1 past tasks.")
@click.option("--groups", "n_groups", type=click.IntRange(min=1), default=1, show_default=True, help="Disjoint groups to draw.")
@click.option("--normalize", type=click.Choice(["seen", "all"]), default="seen", show_default=True)
@click.option("--loss-source", type=click.Choice(["train", "val"]), default="train", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", help="cpu, cuda, ... (default: auto).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def schedule(refs: tuple[str, ...], recipe_path: Path, registry_uri: str | None, k: int, n_groups: int,
             normalize: str, loss_source: str, seed: int, device: str | None, as_json: bool, **filters: Any) -> None:
    """Model Zoo's boosting scheduler: the next task groups and the current task weights for a zoo of experts.

    The zoo is the experts named by REFS and/or filters (all experts by default); its per-task loss on the
    recipe's stream gives the weights.
    """
    from zoo.schedule import plan_next_round
    from zoo.recipe import load_recipe
    from zoo.schedule import BoostingConfig

    reg = _open(registry_uri)
    cards = reg.select(refs, _query(**filters))
    if not cards:
        raise ZooError(f"no experts selected in {reg.uri}")
    plan = plan_next_round([reg.get(c.id) for c in cards], load_recipe(recipe_path),
                           BoostingConfig(k=k, normalize=normalize, loss_source=loss_source), n_groups, seed, device)
    if as_json:
        click.echo(_json(plan))
        return
    click.echo(f"zoo: {len(plan['experts'])} expert(s) knowing task(s) {task_text(plan['known_tasks']) or '-'}")
    click.echo(f"{'task':>4}  {'loss':>8}  {'weight':>8}")
    for t in plan["known_tasks"]:
        click.echo(f"{t:>4}  {plan['losses'][str(t)]:>8.4f}  {plan['weights'][str(t)]:>8.4f}")
    new = plan["new_task"]
    click.echo("next round" + (f" (new task {new})" if new is not None else " (every task known: multi-task)") + ":")
    for i, g in enumerate(plan["groups"]):
        click.echo(f"  group {i}: tasks {', '.join(map(str, g))}")


@main.command()
@click.argument("architecture", required=False)
@click.option("--arch", "arch_option", metavar="ARCH", help="The architecture (or give it as the argument).")
@click.option("--input-shape", "--input", "input_shape", required=True,
              help="One input, e.g. 3x32x32 or 3,32,32 (an exemplar costs its product in bytes).")
@click.option("--classes", "num_classes", type=click.IntRange(min=1), required=True, help="Classes of the stream.")
@click.option("--tasks", type=click.IntRange(min=1), required=True, help="Tasks of the stream (T).")
@click.option("--exemplars", type=click.IntRange(min=0), default=2000, show_default=True,
              help="DER's exemplar memory B (the reference: B exemplars + T backbones).")
@click.option("--arg", "model_args", multiple=True, metavar="KEY=VALUE", help="An architecture argument (repeat).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def budget(architecture: str | None, arch_option: str | None, input_shape: str, num_classes: int, tasks: int,
           exemplars: int, model_args: tuple[str, ...], as_json: bool) -> None:
    """Memory accounting (MEMO): what ARCHITECTURE costs in exemplars, and the exemplar budgets that give a
    single-backbone method and MEMO the same memory as DER (B exemplars + T backbones)."""
    from zoo.budget import budget_report

    if (architecture is None) == (arch_option is None):
        raise click.UsageError("give the architecture once: as the argument or with --arch")
    architecture = architecture or arch_option
    args = _architecture(architecture, model_args)
    report = budget_report(architecture, _shape(input_shape), num_classes, tasks, exemplars, **args)
    if as_json:
        click.echo(_json(report))
        return
    p, m = report["parameters"], report["model_in_exemplars"]
    lines = [f"{architecture} for {num_classes} classes, inputs {'x'.join(map(str, report['input_shape']))} "
             f"({report['exemplar_bytes']:,} bytes an exemplar), T = {tasks}, B = {exemplars:,}",
             f"parameters     {p['parameters']:>12,}  (backbone {p['backbone']:,} + head {p['head']:,})"]
    if p["specialized"] is not None:
        lines.append(f"MEMO split     generalized {p['generalized']:,} + specialized {p['specialized']:,}")
    lines += [f"one model      {m['backbone']:.2f} exemplars (backbone, as MEMO/PyCIL count); "
              f"{m['with_head']:.2f} with the head",
              f"aligned with DER ({exemplars:,} exemplars + {tasks} backbones):",
              f"  single-backbone method  {report['single_backbone']['backbone']:>8,} exemplars "
              f"({report['single_backbone']['with_head']:,} counting heads)"]
    if "memo" in report:
        lines.append(f"  MEMO                    {report['memo']['exemplars']:>8,} exemplars")
    else:
        lines.append("  MEMO                    (no generalized/specialized split declared for this architecture)")
    click.echo("\n".join(lines))


@main.command()
@registry_option
@click.option("--adopt", is_flag=True, help="First mark a registry made by a zoo from before registry markers.")
def gc(registry_uri: str | None, adopt: bool) -> None:
    """Clean a local registry: delete debris of interrupted writes, re-sync the index, compact it."""
    if adopt:
        from registry.uri import is_hub_uri

        uri = registry_uri or default_registry_uri()
        if is_hub_uri(uri):
            raise ZooError("gc applies to local registries only")
        from registry.local import LocalRegistry

        LocalRegistry.adopt(uri.removeprefix("file://")).close()
    reg = _open(registry_uri)
    if not hasattr(reg, "gc"):
        raise ZooError("gc applies to local registries only")
    counts = reg.gc()
    click.echo(f"gc: {counts['debris']} debris removed, {counts['indexed']} expert(s) indexed, "
               f"{counts['removed_unreadable']} unreadable folder(s) removed")


def _quiet_here(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_root().obj["quiet"] = True
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


# -q/--quiet works after the subcommand too (`zoo run r.yaml -q`), not only before it.
for _command in main.commands.values():
    _command.params.append(click.Option(["--quiet", "-q"], is_flag=True, expose_value=False, callback=_quiet_here,
                                        help="No progress bars or chatter; results and errors only."))


if __name__ == "__main__":  # pragma: no cover
    main()
