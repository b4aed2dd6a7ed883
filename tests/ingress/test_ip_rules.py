"""IP allow and deny lists, IPv4 and IPv6, and the client address behind trusted
proxies: two real ingress nodes (one on 127.0.0.1, one on ::1) and an echo worker on a
real NATS. Only ::1 is a trusted proxy, so X-Forwarded-For sent from 127.0.0.1 is a
spoof and must change nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from contracts.config import ConfigError, load_config
from ingress.forwarded import TrustedProxies
from tests.support.gateway import (
    RelaygateRole,
    admin_ready,
    admin_stats,
    running,
    wait_until,
    write_config,
)
from tests.support.processes import NatsServer, free_port

# ------------------------------------------------------------------ in process


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        ("198.51.100.1", [("x-forwarded-for", "10.0.0.1")], "198.51.100.1"),  # untrusted peer
        ("10.9.0.1", [], "10.9.0.1"),  # a trusted peer that names nobody
        ("10.9.0.1", [("x-forwarded-for", "6.6.6.6, 192.0.2.7")], "192.0.2.7"),
        ("10.9.0.1", [("x-forwarded-for", "192.0.2.7, 10.9.0.2")], "192.0.2.7"),  # two hops
        (
            "10.9.0.1",
            [("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "2001:db8::5")],
            "2001:db8::5",
        ),
        ("10.9.0.1", [("x-forwarded-for", "10.9.0.3, 10.9.0.2")], "10.9.0.3"),  # all trusted
        ("10.9.0.1", [("x-forwarded-for", "garbage, unknown")], "10.9.0.1"),
        ("10.9.0.1", [("x-forwarded-for", "192.0.2.7:4711")], "192.0.2.7"),
        ("::ffff:10.9.0.1", [("x-forwarded-for", "192.0.2.8")], "192.0.2.8"),  # v4-mapped peer
        (
            "10.9.0.1",
            [("forwarded", 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https')],
            "2001:db8:cafe::17",
        ),
        # Forwarded wins over X-Forwarded-For when both are present.
        (
            "10.9.0.1",
            [("x-forwarded-for", "192.0.2.1"), ("forwarded", "for=192.0.2.2")],
            "192.0.2.2",
        ),
    ],
)
def test_client_address_is_the_nearest_untrusted_hop(
    peer: str, headers: list[tuple[str, str]], client: str
) -> None:
    proxies = TrustedProxies(["10.9.0.0/16"])
    assert proxies.resolve(peer, "http", headers)[0] == client


def test_only_a_trusted_proxy_says_the_request_came_over_tls() -> None:
    proxies = TrustedProxies(["10.9.0.0/16"])
    assert proxies.resolve("10.9.0.1", "http", [("x-forwarded-proto", "https")])[1] == "https"
    assert proxies.resolve("10.9.0.1", "http", [("forwarded", "for=1.2.3.4;proto=https")])[1] == (
        "https"
    )
    assert proxies.resolve("198.51.100.1", "http", [("x-forwarded-proto", "https")])[1] == "http"
    assert proxies.resolve("10.9.0.1", "http", [("x-forwarded-proto", "gopher")])[1] == "http"


# ------------------------------------------- two real ingress nodes, IPv4 and IPv6


@dataclass
class Nodes:
    v4: str  # http://127.0.0.1:port, an untrusted peer
    v6: str  # http://[::1]:port, a trusted proxy
    admin_v4: str


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, nats_server: NatsServer) -> Iterator[Nodes]:
    tmp = tmp_path_factory.mktemp("ip-rules")
    config = write_config(
        tmp / "ip.yaml",
        {
            "bus": {"url": nats_server.url, "prefix": f"ip-{uuid.uuid4().hex[:8]}"},
            "caller": {"trusted_proxies": ["::1/128"]},
            "policies": [{"type": "ip_rules", "deny": ["192.0.2.0/24", "2001:db8:bad::/48"]}],
            "routes": [
                {
                    "name": "private",
                    "when": {"path": "/private"},
                    "to": {"type": "worker", "topic": "echo"},
                    "policies": [
                        {
                            "type": "ip_rules",
                            "allow": ["10.0.0.0/8", "::1/128", "2001:db8:1::/48"],
                            "deny": ["10.66.0.0/16"],
                        }
                    ],
                },
                {
                    "name": "public",
                    "when": {"path": "/public"},
                    "to": {"type": "worker", "topic": "echo"},
                },
            ],
        },
    )
    worker = RelaygateRole(tmp, "worker", config, ["worker", "echo", "--topic", "echo"])
    ports = {host: (free_port(), free_port()) for host in ("127.0.0.1", "::1")}
    ingresses = [
        RelaygateRole(
            tmp,
            f"ingress-{i}",
            config,
            ["ingress"],
            env={
                "RELAYGATE_INGRESS__HOST": host,
                "RELAYGATE_INGRESS__PORT": str(port),
                "RELAYGATE_ADMIN__PORT": str(admin_port),
            },
        )
        for i, (host, (port, admin_port)) in enumerate(ports.items())
    ]
    with running([worker, *ingresses], exit_zero=False):
        admin_v4 = f"http://127.0.0.1:{ports['127.0.0.1'][1]}"
        wait_until(lambda: admin_ready(admin_v4), 10.0, "admin /readyz", ingresses[0])
        yield Nodes(
            v4=f"http://127.0.0.1:{ports['127.0.0.1'][0]}",
            v6=f"http://[::1]:{ports['::1'][0]}",
            admin_v4=admin_v4,
        )


def _get(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers=headers, timeout=10.0)


@pytest.mark.nats
@pytest.mark.e2e
def test_allow_list_admits_a_listed_ipv6_peer(nodes: Nodes) -> None:
    response = _get(f"{nodes.v6}/private")
    assert response.status_code == 200, response.text
    assert response.json()["client"].startswith("::1:")  # the envelope keeps the direct peer


@pytest.mark.nats
@pytest.mark.e2e
def test_allow_list_refuses_an_unlisted_ipv4_peer_with_403(nodes: Nodes) -> None:
    response = _get(f"{nodes.v4}/private")
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/ip-denied")
    assert "127.0.0.1" in problem["detail"]
    assert problem["correlation_id"] == response.headers["x-correlation-id"]


@pytest.mark.nats
@pytest.mark.e2e
def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(nodes: Nodes) -> None:
    before = admin_stats(nodes.admin_v4)
    for header in ("x-forwarded-for", "forwarded"):
        value = "10.0.0.5" if header == "x-forwarded-for" else "for=10.0.0.5"
        assert _get(f"{nodes.v4}/private", **{header: value}).status_code == 403
        # and a denied address it claims does not get it refused either
        value = "192.0.2.9" if header == "x-forwarded-for" else "for=192.0.2.9"
        assert _get(f"{nodes.v4}/public", **{header: value}).status_code == 200
    after = admin_stats(nodes.admin_v4)
    assert after["rejected"] - before["rejected"] == 2
    assert after["replies"] - before["replies"] == 2  # refusals never reached the bus


@pytest.mark.nats
@pytest.mark.e2e
def test_trusted_proxy_names_the_client(nodes: Nodes) -> None:
    assert _get(f"{nodes.v6}/private", **{"x-forwarded-for": "10.1.2.3"}).status_code == 200
    assert _get(f"{nodes.v6}/private", **{"x-forwarded-for": "172.16.0.1"}).status_code == 403
    assert _get(f"{nodes.v6}/private", forwarded='for="[2001:db8:1::7]:443"').status_code == 200
    # The rightmost untrusted hop is the client; what it wrote to its left is not believed.
    assert (
        _get(f"{nodes.v6}/private", **{"x-forwarded-for": "10.1.2.3, 172.16.0.1"}).status_code
        == 403
    )
    assert (
        _get(f"{nodes.v6}/public", **{"x-forwarded-for": "192.0.2.7, 10.1.2.3"}).status_code == 200
    )


@pytest.mark.nats
@pytest.mark.e2e
def test_deny_wins_over_allow_and_the_global_list_applies_to_every_route(nodes: Nodes) -> None:
    assert _get(f"{nodes.v6}/private", **{"x-forwarded-for": "10.66.1.1"}).status_code == 403
    for path in ("/public", "/private"):
        assert _get(f"{nodes.v6}{path}", **{"x-forwarded-for": "192.0.2.7"}).status_code == 403
        denied = _get(f"{nodes.v6}{path}", forwarded='for="[2001:db8:bad::1]"')
        assert denied.status_code == 403
        assert "2001:db8:bad::1" in denied.json()["detail"]
    assert _get(f"{nodes.v6}/public", **{"x-forwarded-for": "2001:db8:beef::1"}).status_code == 200


@pytest.mark.parametrize(
    ("policy", "error"),
    [
        ({"type": "ip_rules"}, "policies[0]: give `allow`, `deny` or both"),
        (
            {"type": "ip_rules", "deny": ["10.0.0.0/33"]},
            "policies[0].deny: '10.0.0.0/33' is not a CIDR",
        ),
    ],
)
def test_bad_rules_are_refused_with_their_yaml_path(
    tmp_path: Path, policy: dict[str, object], error: str
) -> None:
    path = write_config(tmp_path / "bad.yaml", {"policies": [policy]})
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert any(problem.startswith(error) for problem in refused.value.problems), refused.value
