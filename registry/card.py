"""ExpertCard: the metadata schema of an expert (``zoo.json``), its validation, and model-card rendering.

The card is the single source of truth about an expert: what it was trained on (global task ids in head
order), where it came from (parents with their digests), how (method, hyperparameters, seed), how well
(metrics), and the sha256 of every file of the expert folder. Parsing is strict: a missing or mistyped field
raises :class:`~registry.errors.CardError` naming the field.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import re
import threading
from typing import Annotated, Any, Iterator

import msgspec

from .errors import CardError
from .names import is_name, validate_expert_id, validate_name

#: Version of the on-disk expert format; bumped on incompatible changes.
FORMAT_VERSION = 1
CARD_FILE = "zoo.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Integers the index (SQLite INTEGER) can hold; every integer in a card must fit.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: How deeply hyperparameters and other free-form values may nest.
MAX_DEPTH = 32
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# The constraints a card's numbers and digests must meet, stated once for the compiled decoder (below);
# ``_parse_card`` checks the same rules in Python and names the field that breaks one.
_Count = Annotated[int, msgspec.Meta(ge=0, le=INT_MAX)]
_Int64 = Annotated[int, msgspec.Meta(ge=INT_MIN, le=INT_MAX)]
_Id = Annotated[str, msgspec.Meta(min_length=16, max_length=16)]
_Sha256 = Annotated[str, msgspec.Meta(min_length=64, max_length=64)]


# TaskSpec, ParentRef and FileRecord are msgspec structs so that the compiled decoder builds them itself; they
# hold only numbers and strings, so they can never be part of a reference cycle and stay out of the garbage
# collector's lists (gc=False), which a find returning thousands of cards would otherwise fill.
class TaskSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """One task an expert was trained on: its global id and the global class ids it covers (head order)."""

    id: _Count
    classes: tuple[_Count, ...]


class ParentRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """A model this expert was derived from. ``role`` is ``base`` (started from) or ``expert`` (distilled)."""

    id: _Id
    digest: _Sha256
    role: Annotated[str, msgspec.Meta(max_length=32)]


class FileRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """The sha256 and size in bytes of one file of an expert folder."""

    sha256: _Sha256
    size: _Count


_Text = Annotated[str, msgspec.Meta(max_length=256)]
_Short = Annotated[str, msgspec.Meta(max_length=64)]
# A free-form value (hyperparameters, buffer facts): a scalar is checked by the decoder; a list or dict is
# walked by _json_ok (its items are decoded as Any, where only the walk can refuse an integer beyond 64 bits).
_Value = _Int64 | float | str | bool | None | list | dict


class ExpertCard(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Everything zoo records about an expert; serialised as ``zoo.json``.

    ``digest`` is the sha256 of the expert's content (weights, buffer, config, tasks, name, parents) and ``id``
    its first 16 hex digits, so adding the same expert twice yields the same id. Every field is given by
    keyword and required, as in ``zoo.json``, except ``seed`` and ``buffer``.

    A msgspec struct (like :class:`TaskSpec`, :class:`ParentRef` and :class:`FileRecord`), and its own decoding
    shape: the compiled path (:func:`_fast_card`) builds cards in C, and the annotations are the limits it
    checks there (lengths, 64-bit ranges, ``format_version`` no newer than this zoo's). Building a card by hand
    checks nothing; :meth:`validate` does.
    """

    id: _Id
    digest: _Sha256
    name: str
    architecture: _Text
    num_classes: _Count
    tasks: list[TaskSpec]
    parents: list[ParentRef]
    method: _Text
    hyperparameters: dict[str, _Value]
    seed: _Int64 | None = None
    metrics: dict[Annotated[str, msgspec.Meta(max_length=128)], _Int64 | float | None]
    buffer: dict[str, _Value] | None = None
    labels: list[_Text]
    files: dict[str, FileRecord]
    created_at: _Short
    zoo_version: _Short
    format_version: Annotated[int, msgspec.Meta(ge=INT_MIN, le=FORMAT_VERSION)]

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
        data = msgspec.to_builtins(self)  # new containers all the way down: nothing is shared with the card
        for task in data["tasks"]:
            task["classes"] = list(task["classes"])  # to_builtins keeps tuples; JSON data has lists
        return data

    def to_json(self, indent: int | None = 2) -> str:
        """The card serialised as ``zoo.json`` text (sorted keys, so equal cards give equal bytes);
        ``indent=None`` gives the compact one-line form the index stores."""
        if indent is None:
            return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = CARD_FILE) -> "ExpertCard":
        """Parse and validate a card; raise :class:`CardError` naming the first bad field."""
        return _parse_card(data, source)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = CARD_FILE) -> "ExpertCard":
        """Parse ``zoo.json`` text; raise :class:`CardError` if it is not strict JSON (``NaN`` and
        ``Infinity`` are not JSON) or not a valid card.

        A typical card takes the compiled path (:func:`_fast_card`, a few microseconds); anything it does not
        vouch for goes through the full parser, which accepts it or names the first bad field."""
        card = _fast_card(text)
        return card if card is not None else cls.from_dict(loads_strict(text, source), source)

    def validate(self) -> "ExpertCard":
        """Check this card exactly as one read from disk would be checked (every value storable in JSON and
        in the index), and that it would read back as itself; return it, or raise :class:`CardError` naming
        the first bad field."""
        for key in ("hyperparameters", "metrics", "buffer"):  # free-form: name the nested field and type
            check_json_value(getattr(self, key), key, CARD_FILE)
        # to_dict turns what JSON lacks (bytes, sets, dates, structs) into something it has; a card holding
        # such a value would be stored as something else than it holds, so it is refused.
        back = _parse_card(json.loads(self.to_json()), CARD_FILE)
        for key in self.__struct_fields__:
            value = getattr(self, key)
            if getattr(back, key) != value:
                raise CardError(f"{CARD_FILE}: field '{key}' would not read back as it is "
                                f"({type(value).__name__} {value!r:.60})")
        return self


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_strict(text: str | bytes, source: str) -> Any:
    """``json.loads`` that refuses ``NaN``/``Infinity`` and absurd nesting, with a :class:`CardError`."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise CardError(f"{source}: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise CardError(f"{source}: not valid JSON ({e})") from None


def _text_ok(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_ok(value: Any, depth: int) -> bool:
    """Whether :func:`check_json_value` would accept ``value``: the same rules without building any field
    path, so that the common, valid case costs a walk and nothing else."""
    if depth > MAX_DEPTH:
        return False
    kind = type(value)
    if kind is str:
        return _text_ok(value)
    if kind is int:
        return INT_MIN <= value <= INT_MAX
    if kind is float:
        return math.isfinite(value)
    if value is None or kind is bool:
        return True
    if kind is list:
        for v in value:
            if not _json_ok(v, depth + 1):
                return False
        return True
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str or not _text_ok(k) or not _json_ok(v, depth + 1):
                return False
        return True
    return False


def check_json_value(value: Any, where: str, source: str, depth: int = 0) -> None:
    """Refuse what JSON or the index cannot hold faithfully: non-finite floats, integers beyond 64 bits,
    strings that are not valid Unicode (lone surrogates), keys that are not strings, nesting deeper than
    :data:`MAX_DEPTH`."""
    if _json_ok(value, depth):
        return
    _check_json_value(value, where, source, depth)


def _check_json_value(value: Any, where: str, source: str, depth: int = 0) -> None:
    # The slow walk, run only on a value the fast one refused: it names the field.
    if depth > MAX_DEPTH:
        raise CardError(f"{source}: field '{where}' is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise CardError(f"{source}: field '{where}' holds an integer beyond 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise CardError(f"{source}: field '{where}' holds a non-finite number ({value})")
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise CardError(f"{source}: field '{where}' holds a string that is not valid Unicode") from None
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_json_value(v, f"{where}[{i}]", source, depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CardError(f"{source}: field '{where}' has a key that is not a string")
            _check_json_value(k, f"{where}", source, depth + 1)
            _check_json_value(v, f"{where}.{k}", source, depth + 1)
    else:
        raise CardError(f"{source}: field '{where}' holds a {type(value).__name__}, which JSON cannot store")


def normalise_json(value: Any) -> Any:
    """A JSON-ready copy of ``value`` in which non-finite floats become ``None`` (null), tuples lists:
    what :func:`registry.write_expert` stores for hyperparameters, metrics and buffer facts."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [normalise_json(v) for v in value]
    if isinstance(value, dict):
        return {k: normalise_json(v) for k, v in value.items()}
    return value


def plain_text(value: str, source: str, where: str, limit: int = 1024) -> str:
    """A short one-line text field (architecture, method, label): no control characters (a terminal
    escape in a card must never reach a terminal), at most ``limit`` characters."""
    if _CONTROL.search(value):
        raise CardError(f"{source}: field '{where}' holds control characters")
    if len(value) > limit:
        raise CardError(f"{source}: field '{where}' is longer than {limit} characters")
    return value


def _count(value: Any, where: str, source: str) -> int:
    """A non-negative integer that fits the index."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT_MAX:
        raise CardError(f"{source}: field '{where}' must be a non-negative integer of at most 64 bits")
    return value


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


#: File names every expert has, known to pass the file-name rule (a set lookup instead of the regex).
_USUAL_FILES = frozenset({"README.md", "config.json", "model.safetensors", "buffer.safetensors",
                          "model.safetensors.index.json"})


def _file_name_ok(name: str) -> bool:
    # File names become paths and Hub download patterns: a plain name, no separators, no wildcards, no "..".
    return name in _USUAL_FILES or (_FILE_NAME.fullmatch(name) is not None and ".." not in name)


def _sha(value: Any, where: str, source: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise CardError(f"{source}: field '{where}' must be a sha256 hex digest")
    return value


def _parse_card(data: Any, source: str) -> ExpertCard:
    if not isinstance(data, dict):
        raise CardError(f"{source}: expected a JSON object, got {type(data).__name__}")
    for key, value in data.items():
        check_json_value(value, str(key), source)
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
        tid = _count(_require(t, "id", int, f"{source}: {where}"), f"{where}.id", source)
        classes = _require(t, "classes", list, f"{source}: {where}")
        for c in classes:
            _count(c, f"{where}.classes", source)
        tasks.append(TaskSpec(tid, tuple(classes)))

    parents = []
    for i, p in enumerate(_require(data, "parents", list, source)):
        where = f"parents[{i}]"
        if not isinstance(p, dict):
            raise CardError(f"{source}: field '{where}' must be an object")
        pid = _require(p, "id", str, f"{source}: {where}")
        try:
            validate_expert_id(pid)
        except Exception as e:
            raise CardError(f"{source}: {where}: {e}") from None
        role = plain_text(_require(p, "role", str, f"{source}: {where}"), source, f"{where}.role", 32)
        parents.append(ParentRef(pid, _sha(p.get("digest"), f"{where}.digest", source), role))

    files = {}
    for fname, rec in _require(data, "files", dict, source).items():
        if not _file_name_ok(fname):
            raise CardError(f"{source}: invalid file name {fname!r} in 'files'")
        if not isinstance(rec, dict):
            raise CardError(f"{source}: field 'files.{fname}' must be an object")
        size = _count(_require(rec, "size", int, f"{source}: files.{fname}"), f"files.{fname}.size", source)
        files[fname] = FileRecord(_sha(rec.get("sha256"), f"files.{fname}.sha256", source), size)

    metrics = _require(data, "metrics", dict, source)
    for k, v in metrics.items():
        plain_text(k, source, "metrics", 128)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise CardError(f"{source}: field 'metrics.{k}' must be a number or null")
    labels = _require(data, "labels", list, source)
    if not all(isinstance(x, str) for x in labels):
        raise CardError(f"{source}: field 'labels' must be a list of strings")
    for x in labels:
        plain_text(x, source, "labels", 256)
    architecture = plain_text(_require(data, "architecture", str, source), source, "architecture", 256)
    method = plain_text(_require(data, "method", str, source), source, "method", 256)
    created_at = plain_text(_require(data, "created_at", str, source), source, "created_at", 64)
    zoo_version = plain_text(_require(data, "zoo_version", str, source), source, "zoo_version", 64)

    return ExpertCard(
        id=expert_id,
        digest=digest,
        name=name,
        architecture=architecture,
        num_classes=_count(_require(data, "num_classes", int, source), "num_classes", source),
        tasks=tasks,
        parents=parents,
        method=method,
        hyperparameters=_require(data, "hyperparameters", dict, source),
        seed=_require(data, "seed", int, source, optional=True),
        metrics={k: (None if v is None else float(v)) for k, v in metrics.items()},
        buffer=_require(data, "buffer", dict, source, optional=True),
        labels=list(labels),
        files=files,
        created_at=created_at,
        zoo_version=zoo_version,
        format_version=version,
    )


# --- the compiled path ---------------------------------------------------------------------------------
#
# ``_parse_card`` walks a card in Python: ~30 µs, which is what a query returning thousands of cards from the
# index costs. ``_fast_card`` decodes the same text with msgspec straight into ExpertCard, whose annotations
# are the shapes (strict JSON, strict types, every required field present, no unknown field, floats finite),
# and then runs the value rules the annotations cannot state.
# It only ever *accepts*: whatever it is not sure of (a non-ASCII or escaped string, an unknown field, a bad
# value) returns None and goes to ``_parse_card``, which gives the verdict and the message. So the accepted
# set is the full parser's, and tests/test_card.py checks the two agree on valid and mutated cards.


_DECODER = msgspec.json.Decoder(ExpertCard)


def _fast_card(text: str | bytes) -> ExpertCard | None:
    """The card ``text`` holds if it is a plain valid card, else None (the full parser decides)."""
    # Printable ASCII with no escape at all: then no string holds a control character, a lone surrogate or
    # anything else plain_text() refuses, and the shapes' lengths and patterns are the rest of the rules.
    backslash, delete = ("\\", "\x7f") if isinstance(text, str) else (b"\\", b"\x7f")
    if not text.isascii() or backslash in text or delete in text:
        return None
    try:
        card = _DECODER.decode(text)
    except (msgspec.DecodeError, RecursionError):  # ValidationError included; absurd nesting
        return None
    # The annotations hold types, ranges and lengths (checked in C); patterns are checked here, where they
    # cost a tenth of what msgspec's calls back into ``re`` do.
    if not (card.digest.startswith(card.id) and _hex_digests(card) and is_name(card.name)
            and (card.files.keys() <= _USUAL_FILES or all(_file_name_ok(n) for n in card.files))
            and _values_ok(card.hyperparameters) and (card.buffer is None or _values_ok(card.buffer))):
        return None
    if int in map(type, card.metrics.values()):  # a card may say 1 for 1.0; ExpertCard holds floats
        card.metrics = {k: (v if v is None else float(v)) for k, v in card.metrics.items()}
    return card


def _hex_digests(c: ExpertCard) -> bool:
    # Every digest of the card (the annotations fixed their lengths) is lowercase hex: all of them joined are the
    # canonical hex of their bytes (fromhex would also take capitals and spaces; hex() writes neither). The
    # id is the digest's prefix, so it is covered.
    parts = [c.digest]
    for p in c.parents:
        parts += (p.id, p.digest)
    parts += [f.sha256 for f in c.files.values()]
    joined = "".join(parts)
    try:
        return bytes.fromhex(joined).hex() == joined
    except ValueError:
        return False


def _values_ok(values: dict[str, Any]) -> bool:
    # The decoder checked every scalar; what remains are the lists and dicts, walked one level down.
    for v in values.values():
        kind = type(v)
        if (kind is list or kind is dict) and not _json_ok(v, 1):
            return False
    return True


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while many acyclic objects are made (cards from thousands of
    index rows): each collection would walk every live object of the process (a torch session holds
    hundreds of thousands), for nothing, since cards hold no cycles. Nested and thread-safe: the collector
    runs again when the last pause ends, if it ran before the first."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


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

With zoo (`pip install expert-zoo`), from the folder holding this expert's files (`config.json`,
`model.safetensors`, `zoo.json`): for a repo made by `zoo export`, `huggingface-cli download ORG/REPO
--local-dir expert`; in a registry repo the folder is `experts/{{ id }}/` (download with
`--include "experts/{{ id }}/*"` and load `expert/experts/{{ id }}`):

```python
from registry import Expert
model = Expert.load("expert").model()  # every file checked against its sha256 first
```

or pull it into your registry and load it by id: `zoo pull hf://ORG/REPO {{ id }}`, then
`open_registry("{{ registry_hint }}").get("{{ id }}").model()`.
{%- if timm_loadable %} timm loads it too: `timm.create_model("local-dir:expert", pretrained=True)`.{% endif %}
{%- if input_text %}

Inputs: {{ input_text }}.{% endif %}

## Metrics

{{ metrics_table }}
"""


@functools.lru_cache(maxsize=1)
def _template() -> Any:
    # Compiled once: compiling the Jinja template was about 40% of a small expert's save.
    import jinja2

    return jinja2.Template(_TEMPLATE)


def _timm_architecture(name: str) -> bool:
    try:
        import timm
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    return bool(timm.is_model(name))


def render_model_card(card: ExpertCard, registry_hint: str = "~/.cache/zoo/registry") -> str:
    """Render the expert's ``README.md``: a Hub model card with a YAML header and ``model-index`` metrics."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    eval_results = [
        EvalResult(task_type="image-classification", dataset_type="zoo-task-stream", dataset_name="zoo task stream",
                   metric_type="accuracy" if "acc" in key else key, metric_name=key, metric_value=value)
        for key, value in sorted(card.metrics.items()) if value is not None
    ]
    # base_model must be a Hub model id, which a zoo parent is not: the lineage is in the body (and zoo.json).
    data = ModelCardData(
        library_name="zoo",
        tags=list(dict.fromkeys(["zoo", "continual-learning", card.method, card.architecture, *card.labels])),
        model_name=card.name,
        eval_results=eval_results or None,
    )
    data_input = card.hyperparameters.get("input") if isinstance(card.hyperparameters.get("input"), dict) else {}
    input_text = ""
    if data_input.get("shape"):
        input_text = "shape " + "x".join(str(d) for d in data_input["shape"]) + (
            f", float = {data_input['formula']} with scale {data_input.get('scale')}"
            + (f", mean {data_input.get('mean')}, std {data_input.get('std')}" if data_input.get("mean") else "")
            if data_input.get("formula") else "")
    metrics_table = "| metric | value |\n|---|---|\n" + "".join(
        f"| {k} | {'n/a' if v is None else f'{v:.4f}'} |\n" for k, v in sorted(card.metrics.items())) \
        if card.metrics else "No metrics recorded."
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
        timm_loadable=_timm_architecture(card.architecture),
        input_text=input_text,
    )
    return str(ModelCard(content))  # parses the YAML header back: a malformed card fails here, not on the Hub
