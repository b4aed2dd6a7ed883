"""The dashboard's parts in-process: percentiles and rates from metric deltas, the
signed session cookie, and the admin routes' authentication (token, cookie, none)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from contracts.bus.memory import MemoryBus, MemoryHub
from contracts.bus.pending import PendingReplies
from contracts.config import Config
from contracts.telemetry.metrics import MeterCache
from contracts.topics import Topics
from ingress.admin import build_admin
from ingress.app import IngressApp
from ingress.dashboard.collector import DashboardCollector, quantile
from ingress.dashboard.nodes import IngressNodes
from ingress.dashboard.session import COOKIE, Sessions

TOKEN = "dashboard-unit-token-0123456789"
BOUNDS = [0.001, 0.01, 0.1, float("inf")]


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    # 10 observations under 1 ms, 10 between 1 and 10 ms.
    assert quantile(0.5, BOUNDS, [10, 20, 20, 20]) == pytest.approx(0.001)
    assert quantile(0.75, BOUNDS, [10, 20, 20, 20]) == pytest.approx(0.0055)
    assert quantile(0.25, BOUNDS, [10, 20, 20, 20]) == pytest.approx(0.0005)


def test_quantile_in_the_inf_bucket_is_the_highest_bound_and_none_without_data() -> None:
    assert quantile(0.99, BOUNDS, [0, 0, 1, 100]) == 0.1
    assert quantile(0.5, BOUNDS, [0, 0, 0, 0]) is None


def _collector(pending: PendingReplies, stats: dict[str, int]) -> DashboardCollector:
    return DashboardCollector(
        node_id="ingress-unit",
        pending=pending,
        stats=lambda: stats,
        workers=lambda: [{"node": "routing-1", "upstreams": {}}],
        interval_s=1.0,
        history_s=3,
    )


def test_rates_error_rates_and_percentiles_come_from_deltas_between_samples() -> None:
    meters = MeterCache().route("dash-unit-orders")
    pending = PendingReplies(10)
    stats = {"requests": 0, "timeouts": 0}
    collector = _collector(pending, stats)
    meters.done(200, 0.002)  # before the baseline: not in the first point
    assert collector.sample() is None  # the baseline
    for _ in range(8):
        meters.done(200, 0.003)
    meters.done(404, 0.0002)
    meters.done(503, 2.0)
    stats["requests"] = 10
    pending.late = 2
    point = collector.sample()
    assert point is not None
    route = point["routes"]["dash-unit-orders"]
    # 10 requests in ~0 s of wall clock: compare the shares, not the absolute rates.
    assert route["e4"] == pytest.approx(route["rps"] / 10, rel=1e-3)
    assert route["e5"] == pytest.approx(route["rps"] / 10, rel=1e-3)
    assert 2.5 <= route["p50"] <= 5.0  # ms: the 3 ms observations
    # rank 9.9 of 10 falls 90 % into the (1, 2.5] s bucket of the 2 s observation
    assert route["p99"] == pytest.approx(2350.0)
    assert collector.state["events"]["requests"]["total"] == 10
    assert collector.state["late_total"] == 2
    assert collector.state["workers"][0]["node"] == "routing-1"
    assert "dash-unit-orders" in collector.state["routes"]
    assert collector.state["webhooks"] == []  # no webhook family in this process

    quiet = collector.sample()  # nothing happened since: the route is left out
    assert quiet is not None
    assert "dash-unit-orders" not in quiet["routes"]
    for _ in range(3):
        collector.sample()
    assert len(collector.history) == 3  # bounded: history_s / interval_s


def test_a_session_cookie_is_valid_until_it_expires_and_only_for_its_token() -> None:
    sessions = Sessions(TOKEN, ttl_s=60)
    cookie = sessions.issue(now=1000.0)
    assert sessions.valid(cookie, now=1059.0)
    assert not sessions.valid(cookie, now=1061.0)
    assert not Sessions(TOKEN + "x", ttl_s=60).valid(cookie, now=1001.0)
    version, expiry, nonce, signature = cookie.split(".")
    assert not sessions.valid(f"{version}.{int(expiry) + 9999}.{nonce}.{signature}", now=1001.0)
    assert not sessions.valid("garbage", now=1001.0)
    assert not sessions.valid("", now=1001.0)
    assert Sessions(None, ttl_s=60).valid("", now=0.0)  # no token: open


@pytest.fixture
async def admin_client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    data: dict[str, Any] = getattr(request, "param", {"admin": {"token": TOKEN}})
    config = Config.model_validate(data)
    bus = MemoryBus(topics=Topics(), node_id="ingress-unit", hub=MemoryHub())
    await bus.connect()
    admin = build_admin(IngressApp(config, bus), config)
    transport = httpx.ASGITransport(app=admin)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            yield client
    finally:
        if config.dashboard.enabled:
            await admin.state.dashboard.stop()
        await bus.close()


async def test_without_a_session_the_page_is_the_login_form_and_events_are_refused(
    admin_client: httpx.AsyncClient,
) -> None:
    page = await admin_client.get("/dashboard")
    assert page.status_code == 401
    assert 'action="/dashboard/login"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert (await admin_client.get("/dashboard/events")).status_code == 401
    bad = await admin_client.post("/dashboard/login", data={"token": "wrong-wrong-wrong"})
    assert bad.status_code == 401
    assert "Wrong token." in bad.text
    assert COOKIE not in bad.cookies
    # The assets hold no data: the login page needs its style.
    css = await admin_client.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert (await admin_client.get("/dashboard/static/nope.js")).status_code == 404


async def test_a_login_sets_an_httponly_strict_cookie_that_opens_the_page(
    admin_client: httpx.AsyncClient,
) -> None:
    login = await admin_client.post("/dashboard/login", data={"token": TOKEN})
    assert login.status_code == 303
    assert login.headers["location"] == "/dashboard"
    set_cookie = login.headers["set-cookie"]
    for flag in ("HttpOnly", "SameSite=strict", "Path=/dashboard"):
        assert flag.lower() in set_cookie.lower(), set_cookie
    page = await admin_client.get("/dashboard")
    assert page.status_code == 200
    assert '<script src="/dashboard/static/dashboard.js"' in page.text
    assert "<script>" not in page.text  # no inline script: the CSP forbids it
    assert (await admin_client.get("/stats")).status_code == 401  # the cookie is only for here
    logout = await admin_client.post("/dashboard/logout")
    assert logout.status_code == 303
    assert (await admin_client.get("/dashboard")).status_code == 401


async def test_a_login_posted_from_another_origin_is_refused(
    admin_client: httpx.AsyncClient,
) -> None:
    response = await admin_client.post(
        "/dashboard/login", data={"token": TOKEN}, headers={"origin": "http://evil.example"}
    )
    assert response.status_code == 403
    assert COOKIE not in response.cookies


async def test_the_bearer_token_opens_the_page_without_a_cookie(
    admin_client: httpx.AsyncClient,
) -> None:
    page = await admin_client.get("/dashboard", headers={"authorization": f"Bearer {TOKEN}"})
    assert page.status_code == 200


@pytest.mark.parametrize("admin_client", [{}], indirect=True)
async def test_without_an_admin_token_the_dashboard_is_open_like_the_admin_api(
    admin_client: httpx.AsyncClient,
) -> None:
    assert (await admin_client.get("/dashboard")).status_code == 200
    login = await admin_client.get("/dashboard/login")
    assert login.status_code == 303


@pytest.mark.parametrize("admin_client", [{"dashboard": {"enabled": False}}], indirect=True)
async def test_a_disabled_dashboard_is_not_served(admin_client: httpx.AsyncClient) -> None:
    assert (await admin_client.get("/dashboard")).status_code == 404


async def test_each_node_lists_every_ingress_node_heard_on_the_bus() -> None:
    hub = MemoryHub()
    buses = [MemoryBus(topics=Topics(), node_id=f"ingress-{i}", hub=hub) for i in (1, 2)]
    nodes = [IngressNodes(bus, stale_s=0.3) for bus in buses]
    for bus, node in zip(buses, nodes, strict=True):
        await bus.connect()
        await node.start()
    point: dict[str, Any] = {
        "t": 1,
        "total": {"rps": 5.0, "e4": 0.0, "e5": 1.0, "p99": 3.0},
        "bus": {"pending": 2, "in_flight": 1},
    }
    try:
        nodes[0].record(point)
        assert [n["node"] for n in nodes[0].current()] == ["ingress-1"]  # itself at once
        nodes[1].record({**point, "total": {**point["total"], "rps": 7.0}})
        for _ in range(100):
            if len(nodes[0].current()) == 2 and len(nodes[1].current()) == 2:
                break
            await asyncio.sleep(0.01)
        seen = {n["node"]: n for n in nodes[0].current()}
        assert seen["ingress-2"]["rps"] == 7.0
        assert seen["ingress-1"]["pending"] == 2
        await asyncio.sleep(0.4)  # nobody recorded since: both are stale
        assert nodes[0].current() == []
    finally:
        for bus, node in zip(buses, nodes, strict=True):
            await node.stop()
            await bus.close()
