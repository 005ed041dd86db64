"""The user-facing errors, and the checks on values that raise them; shared by every stage (no file system here).

A :class:`DanError` (:class:`DataError` for bad input, :class:`ConfigError` for a bad setting) is shown as one line
naming the file, field and value at fault, without a traceback. The checks: :func:`is_int` and :func:`is_number`
(no bools; no NaN or infinity), :func:`check_json` (a value read from JSON against a schema), :func:`require_keys`;
:func:`first_line` keeps the line of another library's exception that names the failure. :mod:`dan.io`
re-exports every name, and the stages import them from there.
"""

from __future__ import annotations

import math
from typing import Any


class DanError(Exception):
    """A user-facing error: the message names the file/field/value at fault and is shown without traceback."""


class DataError(DanError):
    """Bad input data (annotations, images, features)."""


class ConfigError(DanError):
    """A bad configuration value (unknown profile, attention type, K < 0, ...)."""


def is_int(value: object) -> bool:
    """An int and not a bool: ``isinstance(True, int)`` holds, so ``-p steps True`` trained K = 1 in a run folder
    named ``vqa-dual-KTrue-s0``, and JSON's ``true`` read as 1."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite int or float, not a bool (NaN passes ``x > 0``-style checks as False both ways; JSON allows
    Infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_NO_MATCH = object()  # check_json: no alternative of a schema matched
_KINDS = {"number": "a finite number", "int": "an integer", "string": "a string", "object": "an object",
          "list": "a list", "any": "any value"}


def _describe(schema: Any) -> str:
    if isinstance(schema, tuple):
        return " or ".join(_describe(s) for s in schema)
    if schema is None:
        return "null"
    if isinstance(schema, dict):
        return "an object"
    if isinstance(schema, list):
        return "a list"
    return _KINDS[schema]


def _matches(value: Any, kind: Any) -> bool:
    if kind is None:
        return value is None
    if isinstance(kind, dict) or kind == "object":
        return isinstance(value, dict)
    if isinstance(kind, list) or kind == "list":
        return isinstance(value, list)
    if kind == "number":
        return is_number(value)
    if kind == "int":
        return is_int(value)
    if kind == "string":
        return isinstance(value, str)
    return kind == "any"


def check_json(value: Any, schema: Any, where: str, path: str = "") -> None:
    """Check ``value`` (read from a JSON file) against ``schema``; a mismatch is a :class:`DataError` naming
    ``where`` (the file), the field's path (``runs.vqa.metrics.overall``, ``history[2].epoch``) and the value.

    ``schema``: ``"number"`` (finite, not a bool), ``"int"`` (not a bool), ``"string"``, ``"object"``, ``"list"``,
    ``"any"``, ``None`` (null), a tuple of alternatives, ``[item]`` (a list of items) or ``{key: schema}`` (an
    object with those keys; ``"key?"`` may be missing; ``"*"``: every key not named). Keys not in the schema are
    allowed (fields this version does not read)."""
    alternatives = schema if isinstance(schema, tuple) else (schema,)
    kind = next((s for s in alternatives if _matches(value, s)), _NO_MATCH)
    if kind is _NO_MATCH:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        field = f"field {path!r}" if path else "the file"
        raise DataError(f"{where}: {field} must be {_describe(schema)}, got {shown}")
    if isinstance(kind, list):
        for i, item in enumerate(value):
            check_json(item, kind[0], where, f"{path}[{i}]")
    elif isinstance(kind, dict):
        for key, sub in kind.items():
            name = key.rstrip("?")
            if key == "*":
                continue
            if name not in value:
                if not key.endswith("?"):
                    raise DataError(f"{where}: missing field {(path + '.' if path else '') + name!r}")
                continue
            check_json(value[name], sub, where, f"{path}.{name}" if path else name)
        if "*" in kind:
            named = {k.rstrip("?") for k in kind}
            for key, item in value.items():
                if key not in named:
                    check_json(item, kind["*"], where, f"{path}.{key}" if path else key)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its type's name if none): libraries such as torch
    explain some failures in a paragraph, and a one-line error keeps the line that names the failure."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def require_keys(record: dict, keys: list[str] | tuple[str, ...], where: str) -> None:
    """Raise :class:`DataError` if ``record`` lacks any of ``keys``; ``where`` names the file and record."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise DataError(f"{where}: missing key(s) {', '.join(repr(k) for k in missing)}")
