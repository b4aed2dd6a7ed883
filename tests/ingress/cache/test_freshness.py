"""The RFC 9111 subset: what may be stored, for how long, and when a 304 answers."""

from __future__ import annotations

from contracts.config import CacheOptions
from contracts.envelope import Principal
from ingress.cache import ResponseCache
from ingress.cache.freshness import Freshness, cache_control, freshness, not_modified

NOW = 1_700_000_000.0


def _fresh(
    headers: dict[str, str], *, per_caller: bool = False, status: int = 200
) -> Freshness | None:
    return freshness(status, headers, default_ttl_s=30, per_caller=per_caller, now=NOW)


def _lifetime(headers: dict[str, str]) -> float:
    fresh = _fresh(headers)
    assert fresh is not None
    return fresh.lifetime_s


def test_cache_control_directives_are_parsed_case_insensitively() -> None:
    assert cache_control('Max-Age=60, no-cache="set-cookie", private') == {
        "max-age": "60",
        "no-cache": "set-cookie",
        "private": None,
    }


def test_s_maxage_wins_over_max_age_over_expires_over_the_route_default() -> None:
    date = "Tue, 14 Nov 2023 22:13:20 GMT"  # NOW
    expires = "Tue, 14 Nov 2023 22:15:00 GMT"  # NOW + 100
    assert _lifetime({"cache-control": "max-age=5, s-maxage=9"}) == 9
    assert _lifetime({"cache-control": "max-age=5", "expires": expires}) == 5
    assert _lifetime({"expires": expires, "date": date}) == 100
    assert _lifetime({}) == 30


def test_no_store_no_cache_vary_star_set_cookie_and_errors_are_not_stored() -> None:
    assert _fresh({"cache-control": "no-store"}) is None
    assert _fresh({"cache-control": "no-cache"}) is None
    assert _fresh({"vary": "*"}) is None
    assert _fresh({"set-cookie": "a=b"}) is None
    assert _fresh({}, status=500) is None


def test_private_is_stored_only_under_a_per_caller_key() -> None:
    assert _fresh({"cache-control": "private, max-age=5"}) is None
    assert _fresh({"cache-control": "private, max-age=5"}, per_caller=True) is not None


def test_stale_while_revalidate_and_upstream_age_are_kept() -> None:
    fresh = _fresh({"cache-control": "max-age=10, stale-while-revalidate=20", "age": "3"})
    assert fresh is not None
    assert (fresh.lifetime_s, fresh.stale_s, fresh.age_s) == (10, 20, 3)
    assert _fresh({"cache-control": "max-age=1", "age": "5"}) is None


def test_if_none_match_uses_weak_comparison_and_beats_if_modified_since() -> None:
    last = "Tue, 14 Nov 2023 22:13:20 GMT"
    assert not_modified({"if-none-match": 'W/"a", "b"'}, '"a"', None)
    assert not_modified({"if-none-match": "*"}, '"a"', None)
    assert not not_modified({"if-none-match": '"x"', "if-modified-since": last}, '"a"', last)
    assert not_modified({"if-modified-since": last}, None, last)
    assert not not_modified({"if-modified-since": "Tue, 14 Nov 2023 22:00:00 GMT"}, None, last)


def test_callers_with_different_credentials_get_different_keys() -> None:
    options = CacheOptions()
    anonymous = ResponseCache.key("r", options, "/p", "", {})
    alice = ResponseCache.key("r", options, "/p", "", {"authorization": "Bearer alice"})
    bob = ResponseCache.key("r", options, "/p", "", {"authorization": "Bearer bob"})
    assert anonymous is not None
    assert alice is not None
    assert bob is not None
    assert len({anonymous.base, alice.base, bob.base}) == 3
    assert alice.per_caller
    assert not anonymous.per_caller
    shared_only = CacheOptions(vary_on_principal=False)
    assert ResponseCache.key("r", shared_only, "/p", "", {"authorization": "x"}) is None
    assert ResponseCache.key("r", options, "/p", "", {"cache-control": "no-store"}) is None


def test_authenticated_callers_are_keyed_by_principal_whatever_carried_the_credential() -> None:
    # An API key in its own header is invisible to the Authorization/Cookie rule: the
    # principal the edge established is what keeps two callers apart.
    options = CacheOptions()
    request = {"x-api-key": "ignored-by-the-key"}
    alice = ResponseCache.key(
        "r", options, "/p", "", request, Principal("alice", authmethod="api_key")
    )
    alice_again = ResponseCache.key(
        "r", options, "/p", "", {}, Principal("alice", authmethod="api_key")
    )
    bob = ResponseCache.key("r", options, "/p", "", request, Principal("bob", authmethod="api_key"))
    other_tenant = ResponseCache.key(
        "r", options, "/p", "", request, Principal("alice", tenant="t2", authmethod="api_key")
    )
    anonymous = ResponseCache.key("r", options, "/p", "", request)
    assert alice is not None
    assert alice_again is not None
    assert bob is not None
    assert other_tenant is not None
    assert anonymous is not None
    assert alice.base == alice_again.base
    assert len({alice.base, bob.base, other_tenant.base, anonymous.base}) == 4
    assert alice.per_caller
    assert not anonymous.per_caller
    shared_only = CacheOptions(vary_on_principal=False)
    assert ResponseCache.key("r", shared_only, "/p", "", {}, Principal("alice")) is None
