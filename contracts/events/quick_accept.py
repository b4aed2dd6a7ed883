"""A quick acceptance test for the simple JSON Schemas most event types have.

jsonschema spends ~20 µs on a three-field object (it builds a validator per keyword it
descends into); event intake is a hot path. `compile_accept` turns a schema that uses only
the keywords below into plain closures, about ten times cheaper. It only ever *accepts*:
a value it refuses, or a schema it does not know, goes to jsonschema, which decides and
says why. So it is written to be strict where the standard is lenient (an `integer` must
be a Python int, where JSON Schema also takes 1.0): strictness costs a jsonschema run,
never a wrong answer. tests/ingress/test_events.py checks it against jsonschema.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Accept = Callable[[Any], bool]

_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",  # an annotation unless a format checker is given, and none is
    }
)
_TYPES: dict[str, Accept] = {
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) is int or type(v) is float,
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
}
_BOUNDS: dict[str, Callable[[Any, Any], bool]] = {
    "minimum": lambda v, b: v >= b,
    "maximum": lambda v, b: v <= b,
    "exclusiveMinimum": lambda v, b: v > b,
    "exclusiveMaximum": lambda v, b: v < b,
}


class _Unsupported(Exception):
    pass


_ABSENT = object()


def compile_accept(schema: Any) -> Accept | None:
    """Closures that accept only values `schema` accepts, or None for a schema that uses
    something else (then jsonschema alone decides)."""
    try:
        return _compile(schema)
    except _Unsupported:
        return None


def _number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _count(schema: dict[str, Any], key: str) -> int:
    value = schema[key]
    if type(value) is not int or value < 0:
        raise _Unsupported
    return value


def _compile(schema: Any) -> Accept:
    if schema is True:
        return _anything
    if schema is False:
        return lambda v: False
    if not isinstance(schema, dict):
        raise _Unsupported
    checks: list[Accept] = []
    for key in schema:
        if key not in _ANNOTATIONS and key not in _KEYWORDS:
            raise _Unsupported
    for group, build in _GROUPS:
        if not group.isdisjoint(schema):
            checks.append(build(schema))
    return _all(checks)


def _all(checks: list[Accept]) -> Accept:
    """One closure for a schema's checks: a call per check, no generator."""
    if not checks:
        return _anything
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: first(v) and second(v)

    def accept(v: Any) -> bool:
        for check in checks:  # noqa: SIM110 (all() over a generator costs twice as much)
            if not check(v):
                return False
        return True

    return accept


def _anything(v: Any) -> bool:
    return True


def _type(schema: dict[str, Any]) -> Accept:
    names = schema["type"]
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not names or any(n not in _TYPES for n in names):
        raise _Unsupported
    tests = [_TYPES[n] for n in names]
    return tests[0] if len(tests) == 1 else lambda v: any(t(v) for t in tests)


def _properties(schema: dict[str, Any]) -> Accept:
    properties = schema["properties"]
    if not isinstance(properties, dict):
        raise _Unsupported
    compiled = tuple((name, _compile(sub)) for name, sub in properties.items())

    def accept(v: Any) -> bool:
        if type(v) is dict:
            for name, check in compiled:
                item = v.get(name, _ABSENT)
                if item is not _ABSENT and not check(item):
                    return False
        return True

    return accept


def _required(schema: dict[str, Any]) -> Accept:
    names = schema["required"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _Unsupported
    required = frozenset(names)
    return lambda v: type(v) is not dict or v.keys() >= required


def _additional(schema: dict[str, Any]) -> Accept:
    known = frozenset(schema.get("properties") or ())
    extra = _compile(schema["additionalProperties"])

    def accept(v: Any) -> bool:
        if type(v) is dict:
            for key, item in v.items():
                if key not in known and not extra(item):
                    return False
        return True

    return accept


def _length(schema: dict[str, Any]) -> Accept:
    low = _count(schema, "minLength") if "minLength" in schema else 0
    high = _count(schema, "maxLength") if "maxLength" in schema else None
    return lambda v: type(v) is not str or (low <= len(v) and (high is None or len(v) <= high))


def _pattern(schema: dict[str, Any]) -> Accept:
    try:
        pattern = re.compile(schema["pattern"])
    except (re.error, TypeError):
        raise _Unsupported from None
    return lambda v: type(v) is not str or pattern.search(v) is not None


def _bounds(schema: dict[str, Any]) -> Accept:
    tests: list[tuple[Callable[[Any, Any], bool], Any]] = []
    for key, compare in _BOUNDS.items():
        if key in schema:
            bound = schema[key]
            if not _number(bound):  # draft 4's boolean exclusiveMinimum, say
                raise _Unsupported
            tests.append((compare, bound))
    if len(tests) == 1:
        ((compare, bound),) = tests
        return lambda v: not _number(v) or compare(v, bound)

    def accept(v: Any) -> bool:
        if _number(v):
            for compare, bound in tests:
                if not compare(v, bound):
                    return False
        return True

    return accept


def _items(schema: dict[str, Any]) -> Accept:
    if "items" in schema and isinstance(schema["items"], list):
        raise _Unsupported  # tuple validation (before 2020-12)
    each = _compile(schema["items"]) if "items" in schema else None
    low = _count(schema, "minItems") if "minItems" in schema else 0
    high = _count(schema, "maxItems") if "maxItems" in schema else None

    def accept(v: Any) -> bool:
        if type(v) is not list:
            return True
        if len(v) < low or (high is not None and len(v) > high):
            return False
        if each is not None:
            for item in v:
                if not each(item):
                    return False
        return True

    return accept


def _enum(schema: dict[str, Any]) -> Accept:
    # Only strings and null: Python's == would take True for 1, JSON Schema would not.
    values = schema["enum"] if "enum" in schema else [schema["const"]]
    if "enum" in schema and "const" in schema:
        values = [schema["const"]] if schema["const"] in schema["enum"] else []
    if not isinstance(values, list) or not all(v is None or type(v) is str for v in values):
        raise _Unsupported
    allowed = tuple(values)
    return lambda v: (v is None or type(v) is str) and v in allowed


# Each builder handles a group of keywords together.
_GROUPS: tuple[tuple[frozenset[str], Callable[[dict[str, Any]], Accept]], ...] = (
    (frozenset({"type"}), _type),
    (frozenset({"required"}), _required),
    (frozenset({"properties"}), _properties),
    (frozenset({"additionalProperties"}), _additional),
    (frozenset({"minLength", "maxLength"}), _length),
    (frozenset({"pattern"}), _pattern),
    (frozenset(_BOUNDS), _bounds),
    (frozenset({"items", "minItems", "maxItems"}), _items),
    (frozenset({"enum", "const"}), _enum),
)
_KEYWORDS = frozenset().union(*(group for group, _ in _GROUPS))
