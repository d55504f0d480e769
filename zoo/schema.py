"""Validating plain data (parsed YAML) into dataclasses, with errors that name the offending key.

``parse(cls, data, "training")`` checks every key against the dataclass's fields and type hints: an unknown
key, a wrong type or a value outside a ``Literal`` raises :class:`RecipeError` naming the dotted path
(``recipe: training.lr must be a number, got str``), with a suggestion for misspelt keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, TypeVar, Union

from registry.errors import ZooError

T = TypeVar("T")


class RecipeError(ZooError, ValueError):
    """A recipe (or one of its blocks) is malformed; the message names the key."""


def _name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        return "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, getattr(tp, "__name__", str(tp)))


def _got(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a bool", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def convert(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the type ``tp`` (recursively) and return it converted (ints to floats...)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        others = [a for a in args if a is not type(None)]
        if len(others) == 1:  # an optional value: its own error is the precise one
            return convert(others[0], value, where)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, where)
            except RecipeError as e:
                errors.append(e)
        raise RecipeError(f"recipe: {where} must be {_name(tp)}, got {_got(value)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise RecipeError(f"recipe: {where} must be {_name(tp)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise RecipeError(f"recipe: {where} must be a list, got {_got(value)}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"recipe: {where} must be a mapping, got {_got(value)}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"recipe: {where} must be true or false, got {_got(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"recipe: {where} must be an integer, got {_got(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"recipe: {where} must be a number, got {_got(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"recipe: {where} must be a string, got {_got(value)}")
        return value
    return value


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None) -> Any:
    """A dataclass field whose value :func:`parse` checks against bounds (``ge`` <=, ``gt`` <, ...), so that a
    nonsense recipe value (``batch_size: 0``, ``patience: -1``) is one error naming the key."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return dataclasses.field(default=default, metadata={"bounds": bounds})


def _check_bounds(value: Any, bounds: dict[str, float], path: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if value != value:  # NaN satisfies no bound
        raise RecipeError(f"recipe: {path} must be a number, got NaN")
    tests = {"ge": (value >= bounds.get("ge", 0), ">="), "gt": (value > bounds.get("gt", 0), ">"),
             "le": (value <= bounds.get("le", 0), "<="), "lt": (value < bounds.get("lt", 0), "<")}
    for key, limit in bounds.items():
        ok, op = tests[key]
        if not ok:
            raise RecipeError(f"recipe: {path} must be {op} {limit:g}, got {value!r}")


def parse(cls: type[T], data: Any, where: str) -> T:
    """Build the dataclass ``cls`` from a mapping, validating every key and value."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"recipe: {where} must be a mapping, got {_got(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(fields))})"
            raise RecipeError(f"recipe: unknown key '{path}'{hint}")
        kwargs[key] = convert(hints[key], value, path)
        _check_bounds(kwargs[key], fields[key].metadata.get("bounds", {}), path)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"recipe: missing key '{where + '.' if where else ''}{name}'")
    return cls(**kwargs)


def to_data(obj: Any) -> Any:
    """The plain-data form of a (nested) dataclass, as the resolved recipe is written."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    return obj
