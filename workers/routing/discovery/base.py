"""What every discovery source shares: `Source.watch(update)` runs until it fails,
calling `update(instances)` with the whole current set each time it changes;
`DiscoveryLoop` runs a source beside the worker, and on a failure keeps the last known
instances, logs once, and starts the source again after a backoff."""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import ValidationError

from contracts.bus import BusError
from contracts.config import UpstreamInstance
from contracts.envelope import now_ms
from workers.routing.background import BackgroundLoop

log = logging.getLogger("relaygate.routing.discovery")

Update = Callable[[list[UpstreamInstance]], None]

_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 10.0


class DiscoveryUnavailable(Exception):
    """The source cannot answer now (unreachable, timed out, refused): try again later."""


class Source(abc.ABC):
    """One upstream's source of instances."""

    kind: str

    @abc.abstractmethod
    async def watch(self, update: Update) -> None:
        """Call `update` with the full instance set at first and after every change;
        return or raise when the source is lost (the loop starts it again)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the instances come from, for logs and the admin API."""


class DiscoveryLoop(BackgroundLoop):
    """Runs `source` for the upstream `name` until closed; records its state for the
    admin API (`snapshot`)."""

    def __init__(self, name: str, source: Source, update: Update) -> None:
        self._name = name
        self._source = source
        self._update = update
        self.updates = 0
        self.updated_ms: int | None = None
        self.error: str | None = None

    def _apply(self, instances: list[UpstreamInstance]) -> None:
        self.updates += 1
        self.updated_ms = now_ms()
        if self.error is not None:
            log.info("upstream %s: discovery from %s works again", self._name, self._describe())
            self.error = None
        self._update(instances)

    def _describe(self) -> str:
        return f"{self._source.kind} {self._source.describe()}"

    async def _run(self) -> None:
        backoff = _BACKOFF_FIRST_S
        while True:
            updates = self.updates
            try:
                await self._source.watch(self._apply)
                problem = "the source closed"
            except (DiscoveryUnavailable, BusError, OSError, TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a source's bug must not end discovery for good
                log.exception("upstream %s: discovery from %s failed", self._name, self._describe())
                problem = f"{type(exc).__name__}: {exc}"
            if self.updates > updates:
                backoff = _BACKOFF_FIRST_S  # it worked for a while: come back quickly
            if problem != self.error:
                log.warning(
                    "upstream %s: discovery from %s: %s; keeping the last %s, retrying",
                    self._name,
                    self._describe(),
                    problem,
                    "instances" if self.updates else "(empty) instance set",
                )
            self.error = problem
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def snapshot(self) -> dict[str, Any]:
        return {
            "type": self._source.kind,
            "source": self._source.describe(),
            "updates": self.updates,
            "updated_ms": self.updated_ms,
            "error": self.error,
        }


def parse_instance(data: bytes | str) -> UpstreamInstance:
    """An instance record: JSON `{"url": ..., "group": 0, "weight": 1}` (more keys, such
    as an announcement's `ttl_ms` and `time_ms`, are the caller's business).

    Raises ValueError with a one-line reason."""
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    fields = {k: record[k] for k in ("url", "group", "weight") if k in record}
    try:
        return UpstreamInstance.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise ValueError(f"{where}: {first['msg']}") from exc
