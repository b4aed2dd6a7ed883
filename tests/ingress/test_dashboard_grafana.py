"""The Grafana dashboard and the Prometheus scrape configuration cannot drift from the
code: every metric a Grafana query names is one the gateway exposes (read from a real
admin API's /metrics and the workers' collectors), and the scrape targets are the
compose services and ports, and the Kubernetes port names, that serve /metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from contracts.bus.memory import MemoryBus, MemoryHub
from contracts.bus.pending import PendingReplies
from contracts.config import Config, load_config
from contracts.telemetry.metrics import (
    WORKER_IN_FLIGHT,
    BusCollector,
    InFlightCollector,
    UpstreamCollector,
    registry_with,
)
from contracts.topics import Topics
from ingress.admin import build_admin
from ingress.app import IngressApp

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana" / "relaygate.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
METRIC = re.compile(r"\b(relaygate_[a-z0-9_]+)")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def _series(exposition: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(exposition):
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


async def _exposed() -> set[str]:
    """What an ingress's /metrics and a worker's listener expose (types included even
    for families without samples yet)."""
    bus = MemoryBus(topics=Topics(), node_id="ingress-1", hub=MemoryHub())
    await bus.connect()
    config = Config()
    admin = build_admin(IngressApp(config, bus), config)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=admin), base_url="http://admin"
        ) as client:
            ingress = (await client.get("/metrics")).text
    finally:
        await admin.state.dashboard.stop()
        await bus.close()
    worker = registry_with(  # as workers/runner.py builds it
        InFlightCollector(WORKER_IN_FLIGHT),
        BusCollector(PendingReplies(1)),
        UpstreamCollector(lambda: {}),
    )
    return _series(ingress) | _series(generate_latest(worker).decode())


def _queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["definition"])
    return exprs


async def test_every_metric_the_grafana_dashboard_queries_is_exposed_by_the_code() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    used = {name for expr in _queries(dashboard) for name in METRIC.findall(expr)}
    exposed = await _exposed()
    assert used - exposed == set(), f"Grafana queries metrics nobody exposes: {used - exposed}"
    # What the dashboard promises to show is there.
    for name in (
        "relaygate_http_requests_total",
        "relaygate_http_request_duration_seconds_bucket",
        "relaygate_bus_pending_replies",
        "relaygate_bus_request_duration_seconds_bucket",
        "relaygate_upstream_breaker_state",
        "relaygate_worker_queue_delay_seconds_bucket",
    ):
        assert name in used, f"the Grafana dashboard does not show {name}"
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(
            f"histogram_quantile({quantile}," in e and "http_request_duration" in e
            for e in _queries(dashboard)
        )
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def _compose_config(service: dict[str, Any]) -> Config:
    mount = next(v for v in service["volumes"] if v.endswith(":/etc/relaygate/relaygate.yaml:ro"))
    return load_config(ROOT / mount.split(":")[0])


def test_prometheus_scrapes_every_compose_ingress_and_worker_on_its_metrics_port() -> None:
    scrape = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    targets = {t for group in jobs["relaygate-ingress"]["static_configs"] for t in group["targets"]}
    workers = {
        (name, sd["port"])
        for sd in jobs["relaygate-workers"]["dns_sd_configs"]
        for name in sd["names"]
    }
    expected_ingress, expected_workers = set(), set()
    for name, service in _compose()["services"].items():
        command = service.get("command", [])
        if command[:1] == ["ingress"]:
            expected_ingress.add(f"{name}:{_compose_config(service).admin.port}")
        elif command[:1] == ["worker"]:
            metrics = _compose_config(service).telemetry.metrics
            assert metrics.worker_host == "0.0.0.0", f"{name}: /metrics only on loopback"
            expected_workers.add((name, metrics.worker_port))
    assert targets == expected_ingress
    assert workers == expected_workers


def test_prometheus_kubernetes_job_keeps_the_ports_the_manifests_name() -> None:
    scrape = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "relaygate-k8s"]
    kept = next(
        r["regex"]
        for r in job["relabel_configs"]
        if r["source_labels"] == ["__meta_kubernetes_pod_container_port_name"]
    )
    names = set()
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if (
                doc
                and doc["kind"] == "Deployment"
                and doc["metadata"]["name"].startswith("relaygate")
            ):
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    names |= {p["name"] for p in container.get("ports", [])}
    assert {"admin", "metrics"} <= names
    assert set(kept.split("|")) == {"admin", "metrics"}
    (config_map,) = [
        doc
        for doc in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "10-config.yaml").read_text())
        if doc
    ]
    metrics = Config.model_validate(yaml.safe_load(config_map["data"]["relaygate.yaml"]))
    assert metrics.telemetry.metrics.worker_port == 9100
