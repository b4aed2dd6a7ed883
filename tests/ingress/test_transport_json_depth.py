"""The JSON depth check against a byte-by-byte reference: the same verdict on generated
documents (brackets inside strings, escapes, unclosed nesting) at every limit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingress.request import Refused
from ingress.transport import check_json_depth
from ingress.transport.json_depth import too_deep


def reference_depth(body: bytes) -> int:
    """The deepest nesting a streaming parser reaches, strings skipped."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        char = chr(byte)
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


tricky_text = st.text(alphabet='[]{}"\\ab \n', max_size=12)
values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(values, st.integers(min_value=1, max_value=12))
def test_the_verdict_matches_a_streaming_parser(value: Any, limit: int) -> None:
    body = json.dumps(value).encode()
    assert too_deep(body, limit) == (reference_depth(body) > limit)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='[]{}"\\a,', max_size=60), st.integers(min_value=1, max_value=8))
def test_malformed_bodies_are_never_judged_shallower_than_they_are(text: str, limit: int) -> None:
    body = text.encode()
    if reference_depth(body) > limit:
        assert too_deep(body, limit)


def test_unclosed_nesting_counts() -> None:
    assert too_deep(b"[" * 65, 64)
    assert not too_deep(b"[" * 64, 64)


@pytest.mark.parametrize(
    ("content_type", "checked"),
    [
        ("application/json", True),
        ("application/vnd.api+json; charset=utf-8", True),
        ("Application/JSON", True),
        ("text/plain", False),
        ("application/octet-stream", False),
    ],
)
def test_only_json_bodies_are_checked(content_type: str, checked: bool) -> None:
    body = b"[" * 10 + b"]" * 10
    headers = [("content-type", content_type)]
    if checked:
        with pytest.raises(Refused) as refused:
            check_json_depth(body, headers, 5)
        assert (refused.value.status, refused.value.slug) == (400, "json-too-deep")
    else:
        check_json_depth(body, headers, 5)


def test_a_body_without_content_type_is_checked_when_it_looks_like_json() -> None:
    with pytest.raises(Refused):
        check_json_depth(b"  \n" + b"{" * 10, [], 5)
    check_json_depth(b"x" + b"{" * 10, [], 5)
