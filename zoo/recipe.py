"""Recipes: a validated YAML file that says what to run (stream, model, methods, training, seed, registry).

```yaml
name: demo
seed: 0
stream: {dataset: digits, scenario: split, n_tasks: 5}
model: {architecture: mlp, args: {in_features: 64, hidden: 256}}
training: {epochs: 20, batch_size: 32, optimizer: adam, lr: 0.001}
methods:
  - finetune
  - {method: replay, memory_size: 100}
  - joint
```

Every key is checked: an unknown key, a wrong type, an unknown architecture or method raises
:class:`~zoo.schema.RecipeError` naming the key. Each method entry may carry its own parameters, a ``label``
(to run one method twice with different settings) and ``training`` overrides.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .budget import BudgetSpec
from .data import StreamSpec
from .schema import RecipeError, parse, to_data
from .train import TrainConfig


@dataclass
class ModelSpec:
    """The architecture (a zoo or timm name) and its constructor arguments."""

    architecture: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodSpec:
    """One method to run: its registered name, its parameters, a label and training overrides."""

    method: str
    label: str = ""
    params: Any = None
    training: TrainConfig | None = None
    given: tuple[str, ...] = ()  # the parameter names the recipe set itself (the rest are defaults)

    @property
    def key(self) -> str:
        """The name results are filed under (the label, else the method)."""
        return self.label or self.method


@dataclass
class Recipe:
    """A whole run: see the module docstring. ``model`` is the architecture of task 0; ``model_changes``
    maps a later task index to the architecture that takes over there (an architecture stream, for HCL).
    In YAML, ``model`` is one mapping, a list with one architecture per task, or a mapping from task index
    to architecture (the last one carried forward)."""

    name: str
    stream: StreamSpec
    model: ModelSpec
    methods: list[MethodSpec]
    training: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    device: str = "auto"
    registry: str | None = None
    description: str = ""
    model_changes: dict[int, ModelSpec] = field(default_factory=dict)
    budget: BudgetSpec | None = None
    """The memory every method that keeps exemplars gets (MEMO's aligned comparison); each one's exemplar
    count is derived from its own model cost (:func:`zoo.budget.plan_budget`)."""

    def model_at(self, t: int) -> ModelSpec:
        """The architecture (and arguments) of task ``t``: the last change at or before ``t``."""
        spec = self.model
        for k in sorted(self.model_changes):
            if k <= t:
                spec = self.model_changes[k]
        return spec

    def to_data(self) -> dict[str, Any]:
        """The recipe as plain data (resolved: every default filled in)."""
        data = to_data(self)
        changes = data.pop("model_changes")
        if changes:
            data["model"] = {0: data["model"], **{int(k): v for k, v in sorted(changes.items())}}
        data["methods"] = [
            {"method": m.method, **({"label": m.label} if m.label else {}), **to_data(m.params),
             **({"training": to_data(m.training)} if m.training is not None else {})}
            for m in self.methods]
        return data


def _model_stream(value: Any) -> tuple[Any, dict[int, Any]]:
    """(architecture of task 0, {task index: architecture} where it changes) from a recipe's ``model``: one
    mapping, a list (one per task), or a mapping from task index to architecture (carried forward)."""
    if isinstance(value, list):
        if not value:
            raise RecipeError("recipe: model: the architecture list is empty")
        return value[0], {i: v for i, v in enumerate(value) if i > 0 and v != value[i - 1]}
    if isinstance(value, dict) and value and all(isinstance(k, int) and not isinstance(k, bool) for k in value):
        if 0 not in value:
            raise RecipeError("recipe: model: an architecture stream must give task 0's architecture")
        if any(k < 0 for k in value):
            raise RecipeError("recipe: model: task indices must be >= 0")
        return value[0], {k: v for k, v in sorted(value.items()) if k > 0}
    return value, {}


def _method_spec(entry: Any, index: int, base_training: dict[str, Any]) -> MethodSpec:
    from .methods import get_method

    where = f"methods[{index}]"
    if isinstance(entry, str):
        entry = {"method": entry}
    if not isinstance(entry, dict) or "method" not in entry:
        raise RecipeError(f"recipe: {where} must be a method name or a mapping with a 'method' key")
    entry = dict(entry)
    name = entry.pop("method")
    if not isinstance(name, str):
        raise RecipeError(f"recipe: {where}.method must be a string")
    cls = get_method(name)
    label = entry.pop("label", "")
    if not isinstance(label, str):
        raise RecipeError(f"recipe: {where}.label must be a string")
    overrides = entry.pop("training", None)
    training = parse(TrainConfig, {**base_training, **overrides}, f"{where}.training") if overrides else None
    params = parse(cls.Params, entry, where)
    return MethodSpec(name, label, params, training, tuple(entry))


def parse_recipe(data: Any, source: str = "recipe") -> Recipe:
    """Validate parsed YAML into a :class:`Recipe`; raise RecipeError naming the first problem."""
    from registry.errors import InvalidNameError, ModelArgsError
    from registry.names import validate_name
    from zoo.models import is_known_architecture, validate_model_args

    if not isinstance(data, dict):
        raise RecipeError(f"recipe: {source} must be a mapping at the top level")
    data = dict(data)
    methods = data.pop("methods", None)
    if "method" in data:  # a single method may be given as `method:`
        if methods is not None:
            raise RecipeError("recipe: give either 'method' or 'methods', not both")
        methods = [data.pop("method")]
    if not isinstance(methods, list) or not methods:
        raise RecipeError("recipe: missing key 'methods' (a list of methods to run)")
    training = data.get("training") or {}
    if not isinstance(training, dict):
        raise RecipeError("recipe: training must be a mapping")
    if "model_changes" in data:
        raise RecipeError("recipe: unknown key 'model_changes' (give the architecture stream as 'model')")
    first, changes = _model_stream(data.get("model"))
    specs = [_method_spec(m, i, training) for i, m in enumerate(methods)]
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        raise RecipeError("recipe: two methods share a name; give them distinct 'label's")
    recipe = parse(Recipe, {**data, "model": first, "methods": []}, "")
    recipe.model_changes = {k: parse(ModelSpec, v, f"model.{k}") for k, v in changes.items()}
    recipe.methods = specs
    # The name and every method's key become folder and expert names: the same rules as expert names.
    for where, value in [("name", recipe.name)] + [(f"methods[{i}].label", s.key) for i, s in enumerate(specs)]:
        try:
            validate_name(value)
        except InvalidNameError as e:
            raise RecipeError(f"recipe: {where}: {e}") from None
    for where, spec in [("model", recipe.model)] + [(f"model.{k}", v) for k, v in recipe.model_changes.items()]:
        if not is_known_architecture(spec.architecture):
            raise RecipeError(f"recipe: {where}.architecture: unknown architecture {spec.architecture!r} "
                              f"(a zoo model or a timm model name)")
        try:
            validate_model_args(spec.architecture, spec.args)
        except ModelArgsError as e:
            raise RecipeError(f"recipe: {where}.args: {e}") from None
    if recipe.budget is not None:
        _check_budget(recipe)
    if recipe.model_changes:
        from .methods import get_method

        for s in specs:
            if not getattr(get_method(s.method), "changes_architecture", False):
                raise RecipeError(f"recipe: method {s.key!r} cannot change architecture between tasks (the model "
                                  f"changes at task(s) {', '.join(map(str, sorted(recipe.model_changes)))}); "
                                  f"use hcl, or one architecture")
    return recipe


def _check_budget(recipe: Recipe) -> None:
    """A budget sizes every memory itself: no method may also set its memory size, and the architecture must
    stay one (a model's cost is what the budget charges)."""
    from .methods import get_method

    if recipe.model_changes:
        raise RecipeError("recipe: budget: the architecture changes between tasks, so no single model cost exists")
    for i, s in enumerate(recipe.methods):
        param = get_method(s.method).memory_param
        if param is not None and param in s.given:
            raise RecipeError(f"recipe: methods[{i}].{param}: the recipe sets a budget, which derives {s.key}'s "
                              f"{param} from its model cost; remove one of the two")


MAX_RECIPE_BYTES = 1024 * 1024


class _RecipeLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases: a recipe is small, and an alias is how a few hundred bytes expand
    into gigabytes (the "billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise RecipeError(f"recipe: YAML aliases (*{event.anchor}) are not allowed in recipes "
                              f"(line {event.start_mark.line + 1})")
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """Parse recipe YAML (a file, or a ``--set`` value) with the alias-free safe loader."""
    return yaml.load(text, Loader=_RecipeLoader)


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a recipe file; ``overrides`` (dotted keys) replace values before validation."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"recipe: {path.name} is larger than {MAX_RECIPE_BYTES // 1024} KiB")
        text = path.read_text()
    except FileNotFoundError:
        raise RecipeError(f"recipe: no such file {path}") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as e:
        raise RecipeError(f"recipe: cannot read {path} ({e.__class__.__name__})") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RecipeError(f"recipe: {path.name} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe: {path.name} must be a mapping at the top level")
    for key, value in (overrides or {}).items():
        apply_override(data, key, value)
    return parse_recipe(data, path.name)


def _child(node: Any, part: str, key: str, create: bool) -> Any:
    """One step of a dotted key: a mapping key, or a list item by index or by its label / method name."""
    if isinstance(node, dict):
        if part not in node or node[part] is None:
            if not create:
                raise RecipeError(f"recipe: --set {key}: no key {part!r}")
            node[part] = {}
        return part
    if isinstance(node, list):
        if part.lstrip("-").isdigit():
            i = int(part)
            if not -len(node) <= i < len(node):
                raise RecipeError(f"recipe: --set {key}: index {i} is out of range (the list has {len(node)} items)")
            return i % len(node)
        names = [(m.get("label") or m.get("method")) if isinstance(m, dict) else m for m in node]
        if part in names:
            return names.index(part)
        raise RecipeError(f"recipe: --set {key}: no item {part!r} (items: {', '.join(map(str, names))})")
    raise RecipeError(f"recipe: --set {key}: {part!r} is inside a value that is neither a mapping nor a list")


def apply_override(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted ``key`` in parsed recipe data: ``training.epochs``, ``methods.1.memory_size`` (an index)
    or ``methods.replay.memory_size`` (a method's label or name). A method given by name alone becomes a
    mapping so that it can take parameters."""
    *parents, last = key.split(".")
    node: Any = data
    for part in parents:
        step = _child(node, part, key, create=True)
        if isinstance(node, list) and isinstance(node[step], str):
            node[step] = {"method": node[step]}
        node = node[step]
    step = _child(node, last, key, create=True) if isinstance(node, list) else last
    if not isinstance(node, (dict, list)):
        raise RecipeError(f"recipe: --set {key}: the parent of {last!r} is not a mapping")
    node[step] = value


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML."""
    return yaml.safe_dump(recipe.to_data(), sort_keys=False)


def method_training(recipe: Recipe, spec: MethodSpec) -> TrainConfig:
    """The training settings a method runs with (its overrides, else the recipe's)."""
    return spec.training if spec.training is not None else dataclasses.replace(recipe.training)
