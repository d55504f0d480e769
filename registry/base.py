"""The ``Registry`` interface shared by the local and the Hub registry, and how references resolve.

A *reference* names one expert: its full id, a unique id prefix (at least 4 hex digits), a tag (such as
``base:latest``) or a name (the newest expert of that name). A :class:`Query` selects many.
"""

from __future__ import annotations

import re
import tempfile
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .card import ExpertCard
from .errors import AmbiguousReferenceError, ExpertNotFoundError, ZooError
from .expert import Expert, write_expert
from .names import validate_tag

_METRIC = re.compile(r"\s*([A-Za-z0-9_.:/-]+)\s*(>=|<=|>|<|==)\s*([-+0-9.eE]+)\s*")


@dataclass(frozen=True)
class MetricFilter:
    """A condition on a recorded metric, such as ``accuracy>=0.9``."""

    key: str
    op: str
    value: float

    def __post_init__(self) -> None:
        # The operator goes into SQL text (registry/local.py): only the five comparisons exist.
        if self.op not in (">=", "<=", ">", "<", "=="):
            raise ZooError(f"invalid metric filter operator {self.op!r}: use >=, <=, >, < or ==")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            raise ZooError(f"invalid metric filter value {self.value!r}: a number")

    @classmethod
    def parse(cls, text: str) -> "MetricFilter":
        """Parse ``KEY OP VALUE`` with OP one of ``>= <= > < ==``."""
        m = _METRIC.fullmatch(text)
        if not m:
            raise ZooError(f"invalid metric filter {text!r}: expected KEY>=VALUE (or <=, >, <, ==)")
        return cls(m.group(1), m.group(2), float(m.group(3)))

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` satisfies the condition (a missing metric never does)."""
        if value is None:
            return False
        return {">=": value >= self.value, "<=": value <= self.value, ">": value > self.value,
                "<": value < self.value, "==": value == self.value}[self.op]


@dataclass(frozen=True)
class Query:
    """Filters for :meth:`Registry.find`. Each field is None (matches anything), one value, or a tuple of
    values: an expert matches a field when it matches **any** of its values (OR within a field) and must
    match **every** given field (AND across fields). ``Query(task=(4, 5), method="bmc")`` is "trained on task
    4 or 5, with bmc"; several metric conditions likewise match when any one holds."""

    task: int | tuple[int, ...] | None = None
    architecture: str | tuple[str, ...] | None = None
    parent: str | tuple[str, ...] | None = None
    tag: str | tuple[str, ...] | None = None
    name: str | tuple[str, ...] | None = None
    method: str | tuple[str, ...] | None = None
    label: str | tuple[str, ...] | None = None
    metric: MetricFilter | tuple[MetricFilter, ...] | None = None

    def values(self, field: str) -> tuple[Any, ...]:
        """The values given for ``field`` as a tuple (empty: the field is not filtered)."""
        value = getattr(self, field)
        if value is None:
            return ()
        return tuple(value) if isinstance(value, (tuple, list)) else (value,)

    def matches(self, card: ExpertCard, tags: dict[str, str]) -> bool:
        """Whether ``card`` satisfies the query; ``tags`` maps registry tags to expert ids."""
        tests: dict[str, Callable[[Any], bool]] = {
            "task": lambda v: v in card.task_ids,
            "architecture": lambda v: card.architecture == v,
            "parent": lambda v: any(p.id == v for p in card.parents),
            "tag": lambda v: tags.get(v) == card.id,
            "name": lambda v: card.name == v,
            "method": lambda v: card.method == v,
            "label": lambda v: v in card.labels,
            "metric": lambda m: m.holds(card.metrics.get(m.key)),
        }
        return all(any(test(v) for v in self.values(f)) for f, test in tests.items() if self.values(f))


@dataclass
class Transfer:
    """What :meth:`Registry.copy_to` did: the experts selected, those actually added (the rest were there),
    and each tag it set, as ``tag -> (previous expert id or None, new expert id)``."""

    selected: list[ExpertCard]
    added: list[ExpertCard]
    tags: dict[str, tuple[str | None, str]]

    def announce(self) -> list[str]:
        """One line per tag set or moved, for the user to see."""
        return [f"tag {t} -> {new[:16]}" + (f" (moved from {old[:16]})" if old else " (new)")
                for t, (old, new) in self.tags.items()]


def resolve_among(ref: str, cards: Sequence[ExpertCard], tags: dict[str, str], where: str) -> ExpertCard:
    """Resolve a reference against a list of cards (id, tag, name, then id prefix); raise clear errors."""
    by_id = {c.id: c for c in cards}
    if ref in by_id:
        return by_id[ref]
    if ref in tags:
        target = tags[ref]
        if target not in by_id:
            raise ExpertNotFoundError(f"tag {ref!r} points at {target}, which is not in {where}")
        return by_id[target]
    named = [c for c in cards if c.name == ref]
    if named:
        return max(named, key=lambda c: (c.created_at, c.id))
    if len(ref) >= 4 and all(ch in "0123456789abcdef" for ch in ref):
        hits = [c for c in cards if c.id.startswith(ref)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise AmbiguousReferenceError(f"id prefix {ref!r} matches {len(hits)} experts in {where}; give more digits")
    raise ExpertNotFoundError(f"no expert {ref!r} in {where} (not an id, id prefix, tag or name)")


class Registry(ABC):
    """Where experts live. Implemented by :class:`~registry.local.LocalRegistry` and
    :class:`~registry.hub.HubRegistry`, both opened from a URI with :func:`registry.open_registry`."""

    uri: str

    @abstractmethod
    def add(self, expert: Expert | str | Path, progress: Callable[[int], Any] | None = None) -> ExpertCard:
        """Store an expert (a no-op if an expert with the same id is already there) and return its card.
        ``progress``, where the registry reports it, is called with the bytes copied so far."""

    @abstractmethod
    def get(self, ref: str) -> Expert:
        """The expert a reference names, as a local folder ready to load."""

    @abstractmethod
    def card(self, ref: str) -> ExpertCard:
        """The card of the expert a reference names (without downloading weights)."""

    @abstractmethod
    def find(self, query: Query | None = None) -> list[ExpertCard]:
        """Cards of the experts matching ``query`` (all when ``None``), oldest first."""

    @abstractmethod
    def remove(self, ref: str) -> ExpertCard:
        """Delete an expert (and the tags that point at it); return its card."""

    @abstractmethod
    def tags(self) -> dict[str, str]:
        """All tags, mapped to expert ids."""

    @abstractmethod
    def tag(self, tag: str, ref: str) -> ExpertCard:
        """Point ``tag`` at an expert (tags move: an existing tag is re-pointed)."""

    @abstractmethod
    def untag(self, tag: str) -> None:
        """Remove a tag (the expert stays)."""

    @abstractmethod
    def verify(self, refs: Iterable[str] | None = None) -> list[str]:
        """Check experts' files against their cards; return one line per problem (empty when all is well)."""

    def save(self, model: Any, **card_fields: Any) -> ExpertCard:
        """Write a model as a new expert (see :func:`registry.write_expert`) and store it."""
        with tempfile.TemporaryDirectory(prefix="zoo-save-") as tmp:
            return self.add(write_expert(Path(tmp) / "expert", model, **card_fields))

    @contextmanager
    def fetch(self, cards: Sequence[ExpertCard]) -> Iterator[list[Expert]]:
        """The experts of ``cards`` as local folders, valid for the duration of the block."""
        yield [self.get(c.id) for c in cards]

    def push(self, experts: Sequence[Expert], message: str | None = None, git_tag: str | None = None,
             tags: dict[str, str] | None = None) -> list[ExpertCard]:
        """Store the experts this registry lacks and point ``tags`` at theirs; return the cards added.
        (A Hub registry does it in one commit, with ``message`` and an optional ``git_tag``.)"""
        if message or git_tag:
            raise ZooError(f"a commit message and a git tag apply to Hub registries, not {self.uri}")
        # Validate everything before the first write: a bad expert or tag name stores nothing.
        for tag in tags or {}:
            validate_tag(tag)
        for expert in experts:
            expert.verify(deep=True)
        known = {e.id for e in experts} | {c.id for c in self.find()}
        for tag, expert_id in (tags or {}).items():
            if expert_id not in known:
                raise ZooError(f"cannot tag {tag!r}: expert {expert_id} is neither pushed nor in {self.uri}")
        have = {c.id for c in self.find()}
        added = [self.add(e) for e in experts if e.id not in have]
        for tag, expert_id in (tags or {}).items():
            self.tag(tag, expert_id)
        return added

    def copy_to(self, into: "Registry", cards: Sequence[ExpertCard], message: str | None = None,
                git_tag: str | None = None) -> "Transfer":
        """Copy the experts of ``cards`` (as :meth:`select` gives them) that ``into`` lacks, with every tag of
        this registry that points at one of them: the one rule of ``zoo push``, ``zoo pull`` and :meth:`pull`.
        A tag that already exists in ``into`` is moved, and the returned :class:`Transfer` says so."""
        cards = list(cards)
        ids = {c.id for c in cards}
        tags = {t: i for t, i in self.tags().items() if i in ids}
        try:
            before, have = into.tags(), {c.id for c in into.find()}
        except ZooError:  # a Hub repo that push is about to create holds nothing yet (push reports real errors)
            before, have = {}, set()
        with self.fetch([c for c in cards if c.id not in have]) as experts:
            added = into.push(experts, message=message, git_tag=git_tag, tags=tags)
        changes = {t: (before.get(t), i) for t, i in sorted(tags.items()) if before.get(t) != i}
        return Transfer(cards, added, changes)

    def pull(self, into: "Registry", refs: Iterable[str] = (), query: Query | None = None) -> list[ExpertCard]:
        """Copy the selected experts into ``into`` (see :meth:`copy_to`); returns the selected cards."""
        return self.copy_to(into, self.select(refs, query)).selected

    def metric_keys(self) -> set[str]:
        """Every metric name some expert's card records."""
        return {k for c in self.find() for k in c.metrics}

    def find_checked(self, query: Query | None = None) -> list[ExpertCard]:
        """:meth:`find`, except that a metric filter on a name no expert records is an error that lists the
        names recorded (a misspelt metric would otherwise quietly match nothing)."""
        cards = self.find(query)
        if query is not None and query.values("metric"):
            keys = self.metric_keys()
            for m in query.values("metric"):
                if m.key not in keys:
                    known = ", ".join(sorted(keys)) or "none"
                    raise ZooError(f"no expert in {self.uri} records metric {m.key!r} (recorded: {known})")
        return cards

    def select(self, refs: Iterable[str] = (), query: Query | None = None) -> list[ExpertCard]:
        """Cards named by ``refs`` plus those matching ``query``; with neither, every expert. No duplicates."""
        refs = list(refs)
        chosen = [self.card(r) for r in refs]
        if query is not None or not refs:
            chosen += self.find_checked(query)
        seen: set[str] = set()
        return [c for c in chosen if not (c.id in seen or seen.add(c.id))]
