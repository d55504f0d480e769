"""Validation of the names users give to experts and tags.

Names end up in folder names, SQLite rows, Hub paths and model cards, so they are restricted to a safe,
portable alphabet. Tags may contain ``:`` (``base:latest``); names may not.
"""

from __future__ import annotations

import re

from .errors import InvalidNameError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
# Tags may also be grouped with single slashes (``demo/replay:final``): every segment starts with a letter or
# digit, so there is no leading, trailing or doubled slash, and no segment is "." or "..".
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:-]*(?:/[A-Za-z0-9][A-Za-z0-9._+:-]*)*")
_ID = re.compile(r"[0-9a-f]{16}")


def _explain(kind: str, value: object) -> str:
    if not isinstance(value, str):
        return f"{kind} must be a string, got {type(value).__name__}"
    if not value:
        return f"{kind} must not be empty"
    if "\\" in value or ("/" in value and kind != "tag"):
        return f"invalid {kind} {value!r}: path separators are not allowed"
    if ".." in value:
        return f"invalid {kind} {value!r}: '..' is not allowed"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"invalid {kind} {value!r}: control characters are not allowed"
    if len(value) > 128:
        return f"invalid {kind} {value[:20]!r}...: longer than 128 characters"
    return f"invalid {kind} {value!r}: use letters, digits and . _ + -" + (
        " : (and / between parts)" if kind == "tag" else "") + ", starting with a letter or digit"


def is_name(value: str) -> bool:
    """True when ``value`` is a valid expert name."""
    return bool(_NAME.fullmatch(value)) and ".." not in value


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid expert name, else raise :class:`InvalidNameError`."""
    if isinstance(name, str) and is_name(name):
        return name
    raise InvalidNameError(_explain("name", name))


def validate_tag(tag: object) -> str:
    """Return ``tag`` if it is a valid registry tag (such as ``base:latest``), else raise."""
    if isinstance(tag, str) and len(tag) <= 128 and _TAG.fullmatch(tag) and ".." not in tag:
        return tag
    raise InvalidNameError(_explain("tag", tag))


def is_expert_id(value: str) -> bool:
    """True when ``value`` has the shape of a full expert id (16 lowercase hex digits)."""
    return bool(_ID.fullmatch(value))


def validate_expert_id(value: object) -> str:
    """Return ``value`` if it is a full expert id, else raise :class:`InvalidNameError`."""
    if isinstance(value, str) and is_expert_id(value):
        return value
    raise InvalidNameError(f"invalid expert id {value!r}: expected 16 lowercase hex digits")
