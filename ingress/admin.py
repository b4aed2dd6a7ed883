"""The admin API (FastAPI, its own port): health, readiness, the running config, stats,
the routing workers' upstream state, response-cache purges, the API docs and the live
dashboard."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from contracts.config import Config, redact_url
from contracts.telemetry.metrics import (
    HTTP_IN_FLIGHT,
    BusCollector,
    InFlightCollector,
    StatsCollector,
    exposition,
    registry_with,
)
from ingress.admin_credentials import install_credentials
from ingress.apidocs import install_apidocs
from ingress.app import IngressApp
from ingress.dashboard import install_dashboard
from ingress.upstreams import UpstreamStates


def build_admin(app: IngressApp, config: Config) -> FastAPI:
    """Called in the running loop, it subscribes to the routing state at once: the
    ingress serves the admin API with uvicorn's lifespan off. Otherwise the lifespan does."""
    states = UpstreamStates()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await states.start(app.bus)
        yield
        await states.stop()

    admin = FastAPI(
        title="relaygate admin",
        version="0.1.0",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    admin.state.config = config
    admin.state.upstreams = states
    with contextlib.suppress(RuntimeError):  # no running loop: the lifespan subscribes
        admin.state.subscribing = asyncio.get_running_loop().create_task(states.start(app.bus))

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
            "websockets": app.websockets.stats(),
        }

    if config.telemetry.metrics.enabled:
        registry = registry_with(
            BusCollector(app.bus.pending),
            InFlightCollector(HTTP_IN_FLIGHT),
            StatsCollector(
                "relaygate_ingress_events",
                "Outcomes counted by the ingress.",
                lambda: asdict(app.stats),
            ),
        )

        @admin.get("/metrics", summary="Prometheus metrics of this node", response_class=Response)
        async def metrics() -> Response:
            body, content_type = exposition(registry)
            return Response(body, media_type=content_type)

    @admin.get("/upstreams", summary="Upstream state (breakers, instance health) per worker")
    async def upstreams() -> dict[str, Any]:
        return {"workers": states.current()}

    @admin.delete("/cache", summary="Purge cached responses: all, of a route, or of a path")
    async def purge_cache(route: str | None = None, path: str | None = None) -> dict[str, int]:
        return {"purged": await app.cache.purge(route, path)}

    install_credentials(admin, app, config)
    install_apidocs(admin, app)
    install_dashboard(admin, app, config, states)
    return admin
