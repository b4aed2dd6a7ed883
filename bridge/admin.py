"""The bridge's admin API (FastAPI, its own port): endpoints, secrets, the delivery
log, replays and the dead-letter queue. Errors are application/problem+json."""

from __future__ import annotations

import os
from typing import Any

import nats.errors
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from bridge import replay
from bridge.delivery import Deliverer
from bridge.model import (
    Attempt,
    DeadLetter,
    Endpoint,
    EndpointCreated,
    EndpointIn,
    EndpointOut,
    EndpointPatch,
    Replay,
    Rotated,
    Rotation,
    Secret,
    Status,
    now_ms,
)
from bridge.signing import new_secret
from bridge.ssrf import AddressPolicy, UnsafeUrl, check_url
from bridge.state import Conflict, EndpointStore
from contracts.bus.errors import BusError
from contracts.config import BridgeConfig, redact_url
from contracts.problems import CONTENT_TYPE, problem


class Problem(Exception):
    def __init__(self, status: int, slug: str, title: str, detail: str | None = None) -> None:
        super().__init__(detail or title)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail


def _not_found(endpoint_id: str) -> Problem:
    return Problem(404, "no-endpoint", "No such endpoint", f"no endpoint {endpoint_id}")


def build_bridge_admin(
    config: BridgeConfig, store: EndpointStore, deliverer: Deliverer, policy: AddressPolicy
) -> FastAPI:
    admin = FastAPI(title="relaygate webhook bridge", version="0.1.0", redoc_url=None)

    @admin.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> Response:
        body = problem(exc.status, exc.slug, exc.title, exc.detail, instance=request.url.path)
        return Response(body, status_code=exc.status, media_type=CONTENT_TYPE)

    @admin.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()
        ]
        body = problem(
            422,
            "invalid-request",
            "The request is not valid",
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors),
            instance=request.url.path,
            errors=errors,
        )
        return Response(body, status_code=422, media_type=CONTENT_TYPE)

    @admin.exception_handler(BusError)
    @admin.exception_handler(nats.errors.Error)
    @admin.exception_handler(Conflict)
    async def on_bus_error(request: Request, exc: Exception) -> Response:
        body = problem(
            503,
            "bus-unavailable",
            "The bridge cannot reach its store",
            f"{type(exc).__name__}: {exc}",
            instance=request.url.path,
        )
        return Response(
            body, status_code=503, media_type=CONTENT_TYPE, headers={"retry-after": "1"}
        )

    async def safe(url: str) -> None:
        try:
            await check_url(url, policy)
        except UnsafeUrl as exc:
            raise Problem(422, "unsafe-url", "The URL is refused", str(exc)) from None

    async def existing(endpoint_id: str) -> Endpoint:
        endpoint = await store.get(endpoint_id)
        if endpoint is None:
            raise _not_found(endpoint_id)
        return endpoint

    async def changed(endpoint_id: str, **update: Any) -> Endpoint:
        def change(endpoint: Endpoint) -> Endpoint:
            return endpoint.model_copy(update={**update, "updated_ms": now_ms()})

        endpoint = await store.modify(endpoint_id, change)
        if endpoint is None:
            raise _not_found(endpoint_id)
        await deliverer.apply(endpoint_id, endpoint)
        return endpoint

    @admin.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @admin.get("/readyz", summary="Connected to the bus")
    async def readyz() -> JSONResponse:
        ready = deliverer.bus.connected
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "bus": redact_url(deliverer.bus.url)},
            status_code=200 if ready else 503,
        )

    @admin.post("/endpoints", status_code=201, summary="Register an endpoint")
    async def create(body: EndpointIn) -> EndpointCreated:
        await safe(body.url)
        secret = body.secret or new_secret()
        at = now_ms()
        endpoint = Endpoint(
            id="ep_" + os.urandom(8).hex(),
            url=body.url,
            events=body.events,
            headers=body.headers,
            rate_per_s=body.rate_per_s or config.rate_per_s,
            max_concurrency=body.max_concurrency or config.max_concurrency,
            description=body.description,
            secrets=[Secret(value=secret)],
            created_ms=at,
            updated_ms=at,
        )
        await store.create(endpoint)
        # Create its consumer now: events published once this answers are delivered.
        await deliverer.apply(endpoint.id, endpoint)
        return EndpointCreated(**endpoint.public().model_dump(), secret=secret)

    @admin.get("/endpoints", summary="Every endpoint (without secrets)")
    async def list_endpoints() -> list[EndpointOut]:
        return [e.public() for e in await store.list()]

    @admin.get("/endpoints/{endpoint_id}", summary="One endpoint")
    async def get(endpoint_id: str) -> EndpointOut:
        return (await existing(endpoint_id)).public()

    @admin.patch("/endpoints/{endpoint_id}", summary="Change an endpoint")
    async def update(endpoint_id: str, body: EndpointPatch) -> EndpointOut:
        fields = body.model_dump(exclude_unset=True)
        if fields.get("url") is not None:
            await safe(fields["url"])
        fields = {k: v for k, v in fields.items() if v is not None}
        return (await changed(endpoint_id, **fields)).public()

    @admin.delete("/endpoints/{endpoint_id}", status_code=204, summary="Delete an endpoint")
    async def delete(endpoint_id: str) -> Response:
        if not await store.delete(endpoint_id):
            raise _not_found(endpoint_id)
        await deliverer.apply(endpoint_id, None)
        return Response(status_code=204)

    async def set_status(endpoint_id: str, status: Status) -> EndpointOut:
        await existing(endpoint_id)
        return (await changed(endpoint_id, status=status, status_reason=None)).public()

    @admin.post("/endpoints/{endpoint_id}/pause", summary="Stop delivering; events wait")
    async def pause(endpoint_id: str) -> EndpointOut:
        return await set_status(endpoint_id, "paused")

    @admin.post("/endpoints/{endpoint_id}/resume", summary="Deliver again (also after 410)")
    async def resume(endpoint_id: str) -> EndpointOut:
        return await set_status(endpoint_id, "active")

    @admin.post("/endpoints/{endpoint_id}/rotate-secret", summary="Sign with a new secret")
    async def rotate(endpoint_id: str, body: Rotation | None = None) -> Rotated:
        body = body or Rotation()
        secret = body.secret or new_secret()
        grace_ms = int(1000 * (config.rotation_grace_s if body.grace_s is None else body.grace_s))
        at = now_ms()
        expires = at + grace_ms

        def change(endpoint: Endpoint) -> Endpoint:
            kept = [
                s.model_copy(update={"expires_ms": min(s.expires_ms or expires, expires)})
                for s in endpoint.secrets
                if s.expires_ms is None or s.expires_ms > at
            ]
            return endpoint.model_copy(
                update={"secrets": [Secret(value=secret), *kept], "updated_ms": at}
            )

        endpoint = await store.modify(endpoint_id, change)
        if endpoint is None:
            raise _not_found(endpoint_id)
        await deliverer.apply(endpoint_id, endpoint)
        return Rotated(secret=secret, old_secret_expires_ms=expires)

    @admin.get("/endpoints/{endpoint_id}/attempts", summary="Delivery attempts, newest first")
    async def attempts(endpoint_id: str, limit: int = Query(100, ge=1, le=1000)) -> list[Attempt]:
        await existing(endpoint_id)
        entries = await deliverer.attempts.scan(endpoint_id, limit=limit, newest_first=True)
        return [Attempt.model_validate_json(e.data) for e in entries]

    @admin.post("/endpoints/{endpoint_id}/replay", summary="Deliver an event or a range again")
    async def replay_events(endpoint_id: str, body: Replay) -> dict[str, int]:
        endpoint = await existing(endpoint_id)
        try:
            if body.event_id is not None:
                queued = await replay.replay_event(deliverer, endpoint, body.event_id)
            elif body.since_ms is not None:
                until = body.until_ms if body.until_ms is not None else now_ms()
                if until < body.since_ms:
                    raise Problem(422, "invalid-range", "until_ms is before since_ms")
                queued = await replay.replay_range(deliverer, endpoint, body.since_ms, until)
            else:
                raise Problem(422, "invalid-replay", "Give event_id, or since_ms [until_ms]")
        except replay.NotFound as exc:
            raise Problem(404, "no-event", "No such event", str(exc)) from None
        return {"queued": queued}

    @admin.get("/dead-letters", summary="Events that exhausted their attempts, oldest first")
    async def list_dead_letters(
        endpoint_id: str | None = None, limit: int = Query(100, ge=1, le=1000)
    ) -> list[DeadLetter]:
        return await replay.dead_letters(deliverer, endpoint_id, limit)

    @admin.post("/dead-letters/{seq}/redrive", summary="Deliver one dead letter again")
    async def redrive_one(seq: int) -> dict[str, int]:
        entry = await deliverer.dead_letters.get(seq)
        if entry is None:
            raise Problem(404, "no-dead-letter", "No such dead letter", f"no dead letter {seq}")
        await existing(entry.key)
        await replay.redrive(deliverer, seq)
        return {"redriven": 1}

    @admin.post(
        "/endpoints/{endpoint_id}/dead-letters/redrive",
        summary="Deliver every dead letter of an endpoint again",
    )
    async def redrive_all(endpoint_id: str) -> dict[str, int]:
        await existing(endpoint_id)
        letters = await replay.dead_letters(deliverer, endpoint_id, replay.MAX_REPLAY)
        for letter in letters:
            await replay.redrive(deliverer, letter.seq)
        return {"redriven": len(letters)}

    return admin
