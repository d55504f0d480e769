"""ExpertCard: the metadata schema of an expert (``zoo.json``), its validation, and model-card rendering.

The card is the single source of truth about an expert: what it was trained on (global task ids in head
order), where it came from (parents with their digests), how (method, hyperparameters, seed), how well
(metrics), and the sha256 of every file of the expert folder. Parsing is strict: a missing or mistyped field
raises :class:`~registry.errors.CardError` naming the field.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import CardError
from .names import validate_expert_id, validate_name

#: Version of the on-disk expert format; bumped on incompatible changes.
FORMAT_VERSION = 1
CARD_FILE = "zoo.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class TaskSpec:
    """One task an expert was trained on: its global id and the global class ids it covers (head order)."""

    id: int
    classes: tuple[int, ...]


@dataclass(frozen=True)
class ParentRef:
    """A model this expert was derived from. ``role`` is ``base`` (started from) or ``expert`` (distilled)."""

    id: str
    digest: str
    role: str = "base"


@dataclass(frozen=True)
class FileRecord:
    """The sha256 and size in bytes of one file of an expert folder."""

    sha256: str
    size: int


@dataclass
class ExpertCard:
    """Everything zoo records about an expert; serialised as ``zoo.json``.

    ``digest`` is the sha256 of the expert's content (weights, buffer, config, tasks, name, parents) and ``id``
    its first 16 hex digits, so adding the same expert twice yields the same id.
    """

    id: str
    digest: str
    name: str
    architecture: str
    num_classes: int
    tasks: list[TaskSpec]
    parents: list[ParentRef] = field(default_factory=list)
    method: str = "unknown"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    buffer: dict[str, Any] | None = None
    labels: list[str] = field(default_factory=list)
    files: dict[str, FileRecord] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="microseconds"))
    zoo_version: str = "0+unknown"
    format_version: int = FORMAT_VERSION

    @property
    def task_ids(self) -> list[int]:
        """Global task ids in head order."""
        return [t.id for t in self.tasks]

    @property
    def base(self) -> ParentRef | None:
        """The parent this expert started from, if any."""
        return next((p for p in self.parents if p.role == "base"), None)

    def to_dict(self) -> dict[str, Any]:
        """The card as plain JSON-ready data, in a stable key order."""
        data = asdict(self)
        data["tasks"] = [{"id": t.id, "classes": list(t.classes)} for t in self.tasks]
        return data

    def to_json(self) -> str:
        """The card serialised as ``zoo.json`` text (sorted keys, so equal cards give equal bytes)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = CARD_FILE) -> "ExpertCard":
        """Parse and validate a card; raise :class:`CardError` naming the first bad field."""
        return _parse_card(data, source)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = CARD_FILE) -> "ExpertCard":
        """Parse ``zoo.json`` text; raise :class:`CardError` if it is not JSON or not a valid card."""
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CardError(f"{source}: not valid JSON ({e})") from None
        return cls.from_dict(data, source)


# --- parsing --------------------------------------------------------------------------------------------


def _require(data: dict, key: str, types: type | tuple[type, ...], source: str, optional: bool = False) -> Any:
    if key not in data:
        if optional:
            return None
        raise CardError(f"{source}: missing field '{key}'")
    value = data[key]
    if value is None and optional:
        return None
    # bool is an int subclass; a boolean where a number is expected is a type error, not a 0/1.
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise CardError(f"{source}: field '{key}' must be {_type_name(types)}, got bool")
    if not isinstance(value, types):
        raise CardError(f"{source}: field '{key}' must be {_type_name(types)}, got {type(value).__name__}")
    return value


def _type_name(types: type | tuple[type, ...]) -> str:
    names = {int: "an integer", str: "a string", list: "a list", dict: "an object", float: "a number", bool: "a bool"}
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in ts)


def _sha(value: Any, where: str, source: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise CardError(f"{source}: field '{where}' must be a sha256 hex digest")
    return value


def _parse_card(data: Any, source: str) -> ExpertCard:
    if not isinstance(data, dict):
        raise CardError(f"{source}: expected a JSON object, got {type(data).__name__}")
    version = _require(data, "format_version", int, source)
    if version > FORMAT_VERSION:
        raise CardError(f"{source}: format_version {version} is newer than this zoo understands ({FORMAT_VERSION})")
    try:
        expert_id = validate_expert_id(_require(data, "id", str, source))
        name = validate_name(_require(data, "name", str, source))
    except CardError:
        raise
    except Exception as e:  # InvalidNameError: re-raise as a card problem with the file named
        raise CardError(f"{source}: {e}") from None
    digest = _sha(_require(data, "digest", str, source), "digest", source)
    if not digest.startswith(expert_id):
        raise CardError(f"{source}: id {expert_id} does not match digest {digest[:16]}...")

    tasks = []
    for i, t in enumerate(_require(data, "tasks", list, source)):
        where = f"tasks[{i}]"
        if not isinstance(t, dict):
            raise CardError(f"{source}: field '{where}' must be an object")
        tid = _require(t, "id", int, f"{source}: {where}")
        classes = _require(t, "classes", list, f"{source}: {where}")
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
            raise CardError(f"{source}: field '{where}.classes' must be a list of integers")
        tasks.append(TaskSpec(tid, tuple(classes)))

    parents = []
    for i, p in enumerate(_require(data, "parents", list, source)):
        where = f"parents[{i}]"
        if not isinstance(p, dict):
            raise CardError(f"{source}: field '{where}' must be an object")
        pid = _require(p, "id", str, f"{source}: {where}")
        parents.append(ParentRef(pid, _sha(p.get("digest"), f"{where}.digest", source),
                                 _require(p, "role", str, f"{source}: {where}")))

    files = {}
    for fname, rec in _require(data, "files", dict, source).items():
        if not isinstance(rec, dict):
            raise CardError(f"{source}: field 'files.{fname}' must be an object")
        size = _require(rec, "size", int, f"{source}: files.{fname}")
        files[fname] = FileRecord(_sha(rec.get("sha256"), f"files.{fname}.sha256", source), size)

    metrics = _require(data, "metrics", dict, source)
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise CardError(f"{source}: field 'metrics.{k}' must be a number")
    labels = _require(data, "labels", list, source)
    if not all(isinstance(x, str) for x in labels):
        raise CardError(f"{source}: field 'labels' must be a list of strings")

    return ExpertCard(
        id=expert_id,
        digest=digest,
        name=name,
        architecture=_require(data, "architecture", str, source),
        num_classes=_require(data, "num_classes", int, source),
        tasks=tasks,
        parents=parents,
        method=_require(data, "method", str, source),
        hyperparameters=_require(data, "hyperparameters", dict, source),
        seed=_require(data, "seed", int, source, optional=True),
        metrics={k: float(v) for k, v in metrics.items()},
        buffer=_require(data, "buffer", dict, source, optional=True),
        labels=list(labels),
        files=files,
        created_at=_require(data, "created_at", str, source),
        zoo_version=_require(data, "zoo_version", str, source),
        format_version=version,
    )


# --- model card -----------------------------------------------------------------------------------------

_TEMPLATE = """---
{{ card_data }}
---

# {{ name }}

A **zoo** expert (`{{ architecture }}`, {{ num_classes }} outputs) trained with `{{ method }}` on
{{ n_tasks }} task(s): {{ task_list }}.

- id: `{{ id }}`
- parents: {{ parent_list }}
- seed: {{ seed }}
- created: {{ created_at }} with zoo {{ zoo_version }}

## Load it

```python
from registry import open_registry
model = open_registry("{{ registry_hint }}").get("{{ id }}").model()
```

## Metrics

{{ metrics_table }}
"""


@functools.lru_cache(maxsize=1)
def _template() -> Any:
    # Compiled once: compiling the Jinja template was about 40% of a small expert's save.
    import jinja2

    return jinja2.Template(_TEMPLATE)


def render_model_card(card: ExpertCard, registry_hint: str = "~/.cache/zoo/registry") -> str:
    """Render the expert's ``README.md``: a Hub model card with a YAML header and ``model-index`` metrics."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    eval_results = [
        EvalResult(task_type="image-classification", dataset_type="zoo-task-stream", dataset_name="zoo task stream",
                   metric_type="accuracy" if "acc" in key else key, metric_name=key, metric_value=value)
        for key, value in sorted(card.metrics.items())
    ]
    base = card.base
    data = ModelCardData(
        library_name="zoo",
        tags=["zoo", "continual-learning", card.method, card.architecture, *card.labels],
        base_model=f"zoo:{base.id}" if base else None,
        model_name=card.name,
        eval_results=eval_results or None,
    )
    metrics_table = "| metric | value |\n|---|---|\n" + "".join(
        f"| {k} | {v:.4f} |\n" for k, v in sorted(card.metrics.items())) if card.metrics else "No metrics recorded."
    content = _template().render(
        card_data=data.to_yaml(),
        name=card.name,
        id=card.id,
        architecture=card.architecture,
        num_classes=card.num_classes,
        method=card.method,
        n_tasks=len(card.tasks),
        task_list=", ".join(f"task {t.id} (classes {list(t.classes)})" for t in card.tasks) or "none",
        parent_list=", ".join(f"`{p.id}` ({p.role})" for p in card.parents) or "none",
        seed=card.seed,
        created_at=card.created_at,
        zoo_version=card.zoo_version,
        registry_hint=registry_hint,
        metrics_table=metrics_table,
    )
    return str(ModelCard(content))  # parses the YAML header back: a malformed card fails here, not on the Hub
