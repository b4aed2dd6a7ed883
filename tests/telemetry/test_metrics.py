"""`/metrics` on the ingress's admin port and on each worker's listener: under a known
load of N requests, the counters and histograms move by exactly N; cache, rate-limit
and breaker outcomes show up as they happen."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.telemetry.conftest import PREFIX, ROUTE, Traced

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
N = 25


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def settle(read: Callable[[], float], want: float, timeout: float = 5.0) -> float:
    """A worker counts a request as its reply leaves: read until the figure arrives."""
    deadline = time.monotonic() + timeout
    got = read()
    while got != want and time.monotonic() < deadline:
        time.sleep(0.05)
        got = read()
    return got


@pytest.fixture
def gateway(traced_nats: Traced) -> Traced:
    return traced_nats


def test_n_requests_move_the_ingress_and_worker_metrics_by_n(gateway: Traced) -> None:
    ingress_url = f"{gateway.up.admin_url}/metrics"
    [worker_url] = gateway.worker_metrics_urls()
    ingress0, worker0 = scrape(ingress_url), scrape(worker_url)
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for i in range(N):
            assert client.get(f"{PREFIX}/load/{i}").status_code == 200
    ingress1 = scrape(ingress_url)

    def delta(name: str, **labels: str) -> float:
        return value(ingress1, name, **labels) - value(ingress0, name, **labels)

    assert delta("relaygate_http_requests_total", route=ROUTE, status="200") == N
    assert delta("relaygate_http_request_duration_seconds_count", route=ROUTE) == N
    assert delta("relaygate_http_request_duration_seconds_sum", route=ROUTE) > 0
    topic = f"rg.req.{ROUTE}"
    assert delta("relaygate_bus_request_duration_seconds_count", topic=topic) == N
    assert delta("relaygate_bus_publish_duration_seconds_count", kind="request") == N
    assert delta("relaygate_ingress_events_total", event="replies") == N
    assert value(ingress1, "relaygate_http_in_flight") == 0
    assert value(ingress1, "relaygate_bus_pending_replies") == 0
    # A 10 s bucket holds every request; the histogram is cumulative.
    assert delta("relaygate_http_request_duration_seconds_bucket", route=ROUTE, le="10.0") == N

    def worker_delta(name: str, **labels: str) -> Callable[[], float]:
        return lambda: value(scrape(worker_url), name, **labels) - value(worker0, name, **labels)

    assert (
        settle(worker_delta("relaygate_worker_requests_total", route=ROUTE, status="200"), N) == N
    )
    assert (
        settle(worker_delta("relaygate_worker_request_duration_seconds_count", route=ROUTE), N) == N
    )
    assert settle(worker_delta("relaygate_worker_queue_delay_seconds_count", route=ROUTE), N) == N
    assert (
        settle(worker_delta("relaygate_bus_publish_duration_seconds_count", kind="reply"), N) == N
    )
    worker1 = scrape(worker_url)
    assert value(worker1, "relaygate_worker_in_flight") == 0
    assert value(worker1, "relaygate_upstream_breaker_state", upstream="reflector") == 0


def test_cache_and_rate_limit_outcomes_are_counted(gateway: Traced) -> None:
    url = f"{gateway.up.admin_url}/metrics"
    before = scrape(url)
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        path = f"/cached/c-{time.monotonic_ns()}"
        assert client.get(path).headers["x-cache"] == "miss"
        assert client.get(path).headers["x-cache"] == "hit"
        assert client.get(path).headers["x-cache"] == "hit"
        statuses = [client.get(f"/limited/{i}").status_code for i in range(3)]
    assert statuses == [200, 200, 429]
    after = scrape(url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("relaygate_cache_lookups_total", route="cached", outcome="miss") == 1
    assert delta("relaygate_cache_lookups_total", route="cached", outcome="hit") == 2
    assert delta("relaygate_ratelimit_decisions_total", route="limited", outcome="allowed") == 2
    assert delta("relaygate_ratelimit_decisions_total", route="limited", outcome="limited") == 1
    assert delta("relaygate_http_requests_total", route="limited", status="429") == 1


def test_breaker_state_shows_an_open_circuit(gateway: Traced) -> None:
    [worker_url] = gateway.worker_metrics_urls()
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        statuses = [client.get("/dead/x").status_code for _ in range(3)]
    assert statuses == [502, 502, 503]  # refused twice, then the open circuit answers
    samples = scrape(worker_url)
    assert value(samples, "relaygate_upstream_breaker_state", upstream="dead") == 2
    assert value(samples, "relaygate_upstream_breaker_opened_total", upstream="dead") == 1
    assert value(samples, "relaygate_worker_requests_total", route="dead", status="502") == 2
