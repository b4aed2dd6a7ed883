"""The admin API (FastAPI, its own port): health, readiness, the running config, stats."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from contracts.config import Config, redact_url
from ingress.app import IngressApp


def build_admin(app: IngressApp, config: Config) -> FastAPI:
    admin = FastAPI(title="relaygate admin", version="0.1.0", docs_url="/docs", redoc_url=None)
    admin.state.config = config

    @admin.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @admin.get("/readyz", summary="Ready to serve: connected to the bus")
    async def readyz() -> JSONResponse:
        ready = app.bus.connected
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "bus": redact_url(app.bus.url)},
            status_code=200 if ready else 503,
        )

    @admin.get("/config", summary="The running configuration, secrets redacted")
    async def current_config() -> dict[str, Any]:
        redacted: dict[str, Any] = admin.state.config.redacted()
        return redacted

    @admin.get("/stats", summary="Counters of this ingress node")
    async def stats() -> dict[str, Any]:
        return {
            "node_id": app.bus.node_id,
            "pending": len(app.bus.pending),
            "late_replies": app.bus.pending.late,
            **asdict(app.stats),
        }

    return admin
