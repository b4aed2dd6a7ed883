"""The RFC 9111 subset the response cache follows: which responses may be stored, for
how long they are fresh, how long they may be served stale while a refresh runs, and
when a conditional request is answered 304."""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

# Statuses stored (RFC 9110 §15.1 "heuristically cacheable", minus the rarely useful ones).
CACHEABLE_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 410})


def cache_control(value: str | None) -> dict[str, str | None]:
    """`max-age=60, no-cache="set-cookie", private` -> {"max-age": "60", ...}."""
    directives: dict[str, str | None] = {}
    if not value:
        return directives
    for item in value.split(","):
        name, sep, arg = item.strip().partition("=")
        if name:
            directives[name.lower()] = arg.strip().strip('"') if sep else None
    return directives


def _seconds(arg: str | None) -> float | None:
    if arg is None or not arg.strip().isdigit():
        return None
    return float(arg.strip())


def http_date(value: str | None) -> float | None:
    """Epoch seconds of an HTTP-date; None when absent or invalid."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


@dataclass(slots=True, frozen=True)
class Freshness:
    lifetime_s: float  # fresh while age < lifetime
    stale_s: float  # then servable stale (stale-while-revalidate) for this long
    age_s: float  # the upstream's Age when stored


def freshness(
    status: int,
    headers: dict[str, str],
    *,
    default_ttl_s: float,
    per_caller: bool,
    now: float | None = None,
) -> Freshness | None:
    """How long a response may be reused; None: it must not be stored.

    `headers` are the response's, names lower case. `per_caller`: the key holds the
    caller's credentials, so `private` responses may be stored (no other caller can
    reach them)."""
    if status not in CACHEABLE_STATUSES:
        return None
    cc = cache_control(headers.get("cache-control"))
    if "no-store" in cc or "no-cache" in cc or ("private" in cc and not per_caller):
        return None  # no-cache: we do not revalidate with the upstream, so never reuse
    if headers.get("vary", "").strip() == "*" or "set-cookie" in headers:
        return None
    lifetime = _seconds(cc.get("s-maxage")) if not per_caller else None
    if lifetime is None:
        lifetime = _seconds(cc.get("max-age"))
    if lifetime is None and "expires" in headers:
        expires = http_date(headers["expires"])
        base = http_date(headers.get("date")) or (now if now is not None else time.time())
        lifetime = max(0.0, expires - base) if expires is not None else 0.0
    if lifetime is None:
        lifetime = default_ttl_s
    stale = _seconds(cc.get("stale-while-revalidate")) or 0.0
    if "must-revalidate" in cc or "proxy-revalidate" in cc:
        stale = 0.0
    age = _seconds(headers.get("age")) or 0.0
    if lifetime + stale <= age:
        return None
    return Freshness(lifetime, stale, age)


def _etags(value: str) -> list[str]:
    return [tag.strip().removeprefix("W/") for tag in value.split(",") if tag.strip()]


def not_modified(request: dict[str, str], etag: str | None, last_modified: str | None) -> bool:
    """A conditional GET/HEAD the stored response satisfies (RFC 9110 §13.2.2: If-None-Match
    with weak comparison wins over If-Modified-Since)."""
    if_none_match = request.get("if-none-match")
    if if_none_match is not None:
        if etag is None:
            return False
        tags = _etags(if_none_match)
        return "*" in tags or etag.removeprefix("W/") in tags
    since = http_date(request.get("if-modified-since"))
    modified = http_date(last_modified)
    return since is not None and modified is not None and modified <= since
