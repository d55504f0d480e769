"""An expert's ancestry as a tree of names (``zoo show --lineage``): parents indented under their child."""

from __future__ import annotations

from .base import Registry
from .card import ExpertCard


def task_text(ids: list[int]) -> str:
    """Task ids as a short text: ``0,1,2`` (cut with ``...`` past 24 characters)."""
    text = ",".join(map(str, ids))
    return text if len(text) <= 24 else text[:21] + "..."


def lineage_tree(reg: Registry, card: ExpertCard) -> list[str]:
    """``card``'s ancestry, one line per expert: name, id, method and tasks, each parent indented under its
    child with its role (base, expert, ...); a parent missing from the registry is named by id."""
    tags = reg.tags()
    by_id = {c.id: c for c in reg.find()}

    def label(c: ExpertCard) -> str:
        names = [t for t, i in tags.items() if i == c.id]
        return (f"{c.name} ({c.id}) {c.method}, tasks {task_text(c.task_ids)}"
                + (f" [{', '.join(sorted(names))}]" if names else ""))

    lines = [label(card)]
    shown = {card.id}  # a DAG: an ancestor reached twice (BMC's base is every expert's parent) is shown once

    def walk(c: ExpertCard, prefix: str) -> None:
        for i, p in enumerate(c.parents):
            last = i == len(c.parents) - 1
            branch, more = ("└── ", "    ") if last else ("├── ", "│   ")
            parent = by_id.get(p.id)
            if parent is None:
                lines.append(f"{prefix}{branch}{p.role}: {p.id} (not in this registry)")
            elif p.id in shown:
                lines.append(f"{prefix}{branch}{p.role}: {parent.name} ({p.id}, shown above)")
            else:
                shown.add(p.id)
                lines.append(f"{prefix}{branch}{p.role}: {label(parent)}")
                walk(parent, prefix + more)

    walk(card, "")
    return lines
