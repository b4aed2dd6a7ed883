"""The event schema checks: the quick acceptance of simple JSON Schemas never accepts
what jsonschema refuses (property-tested against it), and the Avro walk names the
failing field."""

from __future__ import annotations

from typing import Any

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.events import AvroType, JsonSchemaType
from contracts.events.quick_accept import compile_accept

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(-5, 5, allow_nan=False)
    | st.sampled_from(["", "a", "ab", "ABC", "xyz1", "1.0"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3)
    ),
    max_leaves=8,
)
_numbers = st.integers(-3, 3) | st.floats(-3, 3, allow_nan=False)
_types = st.sampled_from(["string", "integer", "number", "boolean", "null", "object", "array"])


def _schema(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keywords = st.fixed_dictionaries(
        {},
        optional={
            "type": _types | st.lists(_types, min_size=1, max_size=2),
            "properties": st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=2),
            "required": st.lists(st.sampled_from(["a", "b", "c"]), max_size=2),
            "additionalProperties": inner,
            "minLength": st.integers(0, 3),
            "maxLength": st.integers(0, 3),
            "pattern": st.sampled_from(["^[A-Z]+$", "b", "^$"]),
            "minimum": _numbers,
            "maximum": _numbers,
            "exclusiveMinimum": _numbers,
            "exclusiveMaximum": _numbers,
            "items": inner,
            "minItems": st.integers(0, 2),
            "maxItems": st.integers(0, 2),
            "enum": st.lists(st.none() | st.sampled_from(["a", "ABC"]), min_size=1, max_size=2),
            "const": st.none() | st.sampled_from(["a", 1, True]),
            "title": st.just("t"),
        },
    )
    return st.booleans() | keywords


_schemas: st.SearchStrategy[Any] = st.recursive(st.booleans() | st.just({}), _schema, max_leaves=5)


@settings(max_examples=400, deadline=None)
@given(schema=_schemas, values=st.lists(_json, min_size=1, max_size=5))
def test_quick_accept_never_accepts_what_jsonschema_refuses(schema: Any, values: list[Any]) -> None:
    accept = compile_accept(schema)
    if accept is None:
        return
    validator = jsonschema.Draft202012Validator(schema)
    for value in values:
        if accept(value):
            assert validator.is_valid(value), (schema, value)


def test_quick_accept_takes_the_common_shape_and_leaves_the_rest_to_jsonschema() -> None:
    schema = {
        "type": "object",
        "required": ["id", "amount"],
        "properties": {
            "id": {"type": "string", "minLength": 1},
            "amount": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "additionalProperties": False,
    }
    accept = compile_accept(schema)
    assert accept is not None
    assert accept({"id": "x", "amount": 3, "tags": ["a"]})
    assert not accept({"id": "x", "amount": -1})
    assert not accept({"id": "x", "amount": 1, "other": 1})
    assert not accept({"id": "x", "amount": 1.0})  # jsonschema decides that one: valid
    assert JsonSchemaType(schema).check({"id": "x", "amount": 1.0}) == []
    assert compile_accept({"$ref": "#/$defs/a"}) is None
    assert compile_accept({"anyOf": [{"type": "string"}]}) is None
    assert compile_accept({"exclusiveMinimum": True}) is None  # draft 4's boolean form
    assert compile_accept({"enum": [1, 2]}) is None  # 1 == True in Python


def test_avro_walk_points_at_the_nested_failing_field() -> None:
    schema = {
        "type": "record",
        "name": "Order",
        "fields": [
            {"name": "id", "type": "string"},
            {
                "name": "lines",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "Line",
                        "fields": [{"name": "qty", "type": "int"}],
                    },
                },
            },
            {"name": "next", "type": ["null", "Order"], "default": None},
        ],
    }
    avro = AvroType(schema)
    good = {"id": "a", "lines": [{"qty": 1}], "next": {"id": "b", "lines": []}}
    assert avro.check(good) == []
    errors = avro.check({"id": "a", "lines": [{"qty": 1}, {"qty": "2"}]})
    assert [(e.pointer, e.message) for e in errors] == [("/lines/1/qty", "expected int, got '2'")]
    nested = avro.check({"id": "a", "lines": [], "next": {"id": 1, "lines": []}})
    assert nested[0].pointer == "/next"
    assert "matches none of the union's types (null, Order)" in nested[0].message
    assert avro.check({"id": "a", "lines": [], "x": 1})[0].pointer == "/x"
