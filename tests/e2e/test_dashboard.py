"""The live dashboard of a real `relaygate up`, in Debian's headless Chromium driven by
Playwright: refused without the admin token, a login gives an HttpOnly session cookie,
the page loads with no console error and its numbers and charts move while traffic
flows through the ingress. Saves a screenshot (its path is printed)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from tests.e2e.conftest import Cluster
from tests.support.gateway import RelaygateUp, running_up, wait_routed
from tests.support.reflector import Reflector

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow]

TOKEN = "dashboard-admin-token-0123456789"
CHROMIUM = "/usr/bin/chromium"


def _config(upstream: str) -> dict[str, Any]:
    return {
        "admin": {"token": TOKEN},
        "routes": [
            {
                "name": "orders",
                "when": {"path": "/orders/{rest:path}"},
                "to": {"type": "upstream", "upstream": "shop"},
            },
            {
                "name": "echo",
                "when": {"path": "/echo/{rest:path}"},
                "to": {"type": "worker", "topic": "echo"},
            },
        ],
        "upstreams": {"shop": {"url": upstream}},
        "workers": [{"type": "echo", "topics": ["echo"]}],
    }


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Reflector]:
    reflector = Reflector(tmp_path).start()
    try:
        yield reflector
    finally:
        reflector.stop()


class _Traffic:
    """Requests through the ingress on a thread: successes, 503s from the upstream,
    404s for no route, a few slow ones."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while not self._stop.is_set():
                n = self.sent
                headers = {"x-reflect-delay-ms": str(n % 4 * 5)}
                if n % 7 == 0:
                    headers["x-reflect-status"] = "503"
                client.get(f"/orders/{n}", headers=headers)
                client.get(f"/echo/{n}")
                if n % 5 == 0:
                    client.get("/nowhere")
                self.sent += 1
                time.sleep(0.01)


def _events(admin_url: str, headers: dict[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The event stream's events: (name, data), until the caller stops."""
    with httpx.stream("GET", f"{admin_url}/dashboard/events", headers=headers) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                yield name, json.loads(line[6:])
    raise AssertionError("the event stream ended")


def _number(page: Page, selector: str) -> float:
    text = page.text_content(selector) or ""
    return float(text) if text.replace(".", "", 1).isdigit() else 0.0


def test_dashboard_in_chromium_shows_live_traffic_and_refuses_strangers(
    upstream: Reflector, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no {CHROMIUM}: install Debian's chromium (`make deps-system` does)")
    open_stream = threading.Thread(target=lambda: None)
    # running_up also proves that an open event stream does not hold up the stop.
    with running_up(tmp_path, "dashboard", _config(upstream.url)) as gateway:
        wait_routed(f"{gateway.url}/orders/1")
        _check_dashboard(gateway, tmp_path)
        ended: list[str] = []
        open_stream = threading.Thread(target=_hold_stream, args=(gateway.admin_url, ended))
        open_stream.start()
        time.sleep(0.5)
    open_stream.join(5)
    assert ended == ["ended"]


def _hold_stream(admin_url: str, ended: list[str]) -> None:
    headers = {"authorization": f"Bearer {TOKEN}"}
    with httpx.stream("GET", f"{admin_url}/dashboard/events", headers=headers) as stream:
        for _ in stream.iter_lines():
            pass
    ended.append("ended")


def _check_dashboard(gateway: RelaygateUp, tmp_path: Path) -> None:
    admin = gateway.admin_url
    # Without the token: the page is the login form (401), the stream a 401.
    refused = httpx.get(f"{admin}/dashboard")
    assert refused.status_code == 401
    assert 'name="token"' in refused.text
    assert httpx.get(f"{admin}/dashboard/events").status_code == 401
    assert httpx.get(f"{admin}/stats").status_code == 401  # the admin API stays guarded

    with _Traffic(gateway.url) as traffic, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM)
        try:
            stranger = browser.new_page()
            shown = stranger.goto(f"{admin}/dashboard")
            assert shown is not None
            assert shown.status == 401
            stranger.fill("#token", "not-the-admin-token-at-all")
            with stranger.expect_navigation():
                stranger.click("button[type=submit]")
            assert "Wrong token." in (stranger.text_content(".notice") or "")
            assert stranger.context.cookies() == []

            context = browser.new_context(viewport={"width": 1280, "height": 1100})
            page = context.new_page()
            errors: list[str] = []
            page.on(
                "console",
                lambda m: errors.append(f"{m.text} {m.location}") if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{admin}/dashboard/login")
            page.fill("#token", TOKEN)
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert page.url == f"{admin}/dashboard"
            (cookie,) = context.cookies()
            assert cookie["httpOnly"] is True
            assert cookie["sameSite"] == "Strict"

            page.wait_for_selector("#status.live", timeout=10_000)
            page.wait_for_function(
                "parseFloat(document.getElementById('rps').textContent) > 0", timeout=10_000
            )
            chart = "document.getElementById('chart-rps').toDataURL()"
            before = (page.evaluate(chart), page.text_content("#routes tbody"))
            page.wait_for_selector("#workers .badge.closed", timeout=10_000)
            time.sleep(2.2)  # two more samples
            after = (page.evaluate(chart), page.text_content("#routes tbody"))
            assert before[0] != after[0], "the request-rate chart did not change"
            assert before[1] != after[1], "the routes table did not change"
            rows = page.locator("#routes tbody tr").all_text_contents()
            assert any(row.startswith("orders") for row in rows), rows
            assert _number(page, "#e5") >= 0
            assert "(this one)" in (page.text_content("#nodes tbody") or "")
            assert page.is_hidden("#webhooks-section")  # no webhook data, no panel

            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"dashboard screenshot: {shot}")
            assert errors == []
        finally:
            browser.close()
    assert traffic.sent > 0

    # The stream starts with the history the ingress kept while nobody watched.
    name, history = next(_events(admin, {"authorization": f"Bearer {TOKEN}"}))
    assert name == "history"
    assert history["state"]["node"]
    points = history["points"]
    assert len(points) >= 3
    assert any(p["routes"].get("orders", {}).get("e5", 0) > 0 for p in points)
    assert any(p["total"]["e4"] > 0 for p in points)  # the 404s of /nowhere


@pytest.mark.parametrize("cluster", [("nats", 5000)], indirect=True)
def test_each_ingress_dashboard_lists_every_ingress_node_of_the_cluster(
    cluster: Cluster,
) -> None:
    first, second = cluster.ingresses
    httpx.get(f"{second.url}/echo/hello", timeout=10.0).raise_for_status()
    deadline = time.monotonic() + 10
    for name, data in _events(first.admin_url, {}):  # no admin.token: open, like the API
        nodes = {n["node"]: n for n in data["state"]["nodes"]}
        if len(nodes) == 2:
            assert data["state"]["node"] in nodes
            break
        assert time.monotonic() < deadline, f"{name}: nodes seen {sorted(nodes)}"
