"""The package layout the design promises: methods only under zoo/methods/, no import circles anywhere."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in ("zoo", "registry"):
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = f
    return mods


def _edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> modules it imports (anywhere in the file, function-level imports included)."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for a in node.names:
                    target = next((c for c in (f"{base}.{a.name}", base) if c in mods), None)
                    if target and target != m:
                        edges[m].add(target)
            elif isinstance(node, ast.Import):
                edges[m].update(a.name for a in node.names if a.name in mods and a.name != m)
    return edges


def test_no_import_circles():
    edges = _edges(_modules())
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for k in sorted(edges[n]):
            if state.get(k) == 1:
                cycles.append(" -> ".join(path[path.index(k):] + [k]))
            elif k not in state:
                visit(k, path + [k])
        state[n] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_methods_live_in_zoo_methods():
    """Every registered method (a class decorated with @register_method) is defined under zoo/methods/."""
    from zoo.methods import get_method, list_methods

    names = list_methods()
    assert {"finetune", "replay", "joint", "bmc", "modelzoo", "isolated", "multihead"} <= set(names)
    for name in names:
        assert get_method(name).__module__.startswith("zoo.methods."), name
    for f in (ROOT / "zoo").rglob("*.py"):
        if "methods" in f.relative_to(ROOT / "zoo").parts:
            continue
        assert "@register_method" not in f.read_text(), f
