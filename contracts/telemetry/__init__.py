"""Observability shared by every role: structured logs (`logs`), OpenTelemetry traces
(`tracing`) and Prometheus metrics (`metrics`). `setup` configures a process once."""

from __future__ import annotations

from contracts.config import Config
from contracts.telemetry.logs import configure_logging, shutdown_logging
from contracts.telemetry.tracing import configure_tracing, shutdown_tracing


def setup(config: Config, role: str, level: str | None = None) -> None:
    """Logs, then tracing, for a process of `role` (ingress, worker-routing, …)."""
    configure_logging(config.telemetry.logs, level)
    configure_tracing(config.telemetry.tracing, role)


def shutdown() -> None:
    """Flush spans and log lines; call once when the process ends."""
    shutdown_tracing()
    shutdown_logging()


__all__ = ["setup", "shutdown"]
