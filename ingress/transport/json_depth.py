"""The nesting depth limit of JSON request bodies, checked at the edge so that no worker's
recursive parser meets a body built to exhaust it. One linear pass, in C but for a
running sum over the brackets (about as costly as parsing the body with `json`)."""

from __future__ import annotations

import re
from array import array
from itertools import accumulate

from ingress.request import Refused

# JSON strings may hold brackets: they go first. Unrolled and possessive: no backtracking.
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes
_STARTS_JSON = re.compile(rb"\s*[\[{]")


def too_deep(body: bytes, max_depth: int) -> bool:
    """True when arrays/objects nest deeper than `max_depth` anywhere in the body (unclosed
    ones count: a streaming parser recurses into them all the same)."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    if b'"' in body:
        body = _STRING.sub(b"", body)
    steps = array("b", body.translate(None, _NOT_BRACKET).translate(_STEP))
    return max(accumulate(steps), default=0) > max_depth


def check_json_depth(body: bytes, headers: list[tuple[str, str]], max_depth: int) -> None:
    """Raise `Refused` (400) for a JSON body nested deeper than `max_depth`. A body is
    taken for JSON when its content type says so, or it has none and looks like JSON."""
    content_type = next((v for n, v in headers if n == "content-type"), None)
    if content_type is None:
        if not _STARTS_JSON.match(body):
            return
    else:
        media = content_type.partition(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            return
    if too_deep(body, max_depth):
        raise Refused(
            400,
            "json-too-deep",
            "JSON nested too deeply",
            f"the request body nests arrays and objects deeper than {max_depth} levels",
        )
