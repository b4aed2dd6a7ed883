"""The bridge's state in NATS JetStream: endpoints in a key-value bucket that every
replica watches, journals as streams over `<base>.<endpoint>` read back by sequence,
and what to drop when an endpoint is deleted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from bridge.model import Endpoint
from bridge.state import Conflict, EndpointStore, Entry, Journal, OnChange
from contracts.bus.nats import NatsBus, stream_name

log = logging.getLogger("relaygate.bridge")

_MAX_SCAN = 10_000


class KvEndpointStore(EndpointStore):
    """Endpoints by id in the bucket `<prefix>_webhooks`; writes compare-and-set on the
    entry's revision."""

    def __init__(self, js: JetStreamContext, bucket: str) -> None:
        self._js, self._bucket = js, bucket
        self._kv: KeyValue | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._watching: asyncio.Task[None] | None = None

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("EndpointStore.open() first")
        return self._kv

    async def open(self) -> None:
        try:
            self._kv = await self._js.key_value(self._bucket)
        except nats.js.errors.BucketNotFoundError:
            self._kv = await self._js.create_key_value(
                bucket=self._bucket, history=1, storage=api.StorageType.FILE
            )

    async def get(self, endpoint_id: str) -> Endpoint | None:
        try:
            entry = await self.kv.get(endpoint_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
            return None
        return None if entry.value is None else Endpoint.model_validate_json(entry.value)

    async def list(self) -> list[Endpoint]:
        try:
            keys = await self.kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        found = await asyncio.gather(*(self.get(key) for key in keys))
        return sorted((e for e in found if e is not None), key=lambda e: e.created_ms)

    async def create(self, endpoint: Endpoint) -> None:
        await self.kv.create(endpoint.id, endpoint.model_dump_json().encode())

    async def modify(
        self, endpoint_id: str, change: Callable[[Endpoint], Endpoint]
    ) -> Endpoint | None:
        """Apply `change` to the stored endpoint (None if there is none)."""
        for _ in range(10):
            try:
                entry = await self.kv.get(endpoint_id)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
                return None
            if entry.value is None:
                return None
            new = change(Endpoint.model_validate_json(entry.value))
            try:
                await self.kv.update(endpoint_id, new.model_dump_json().encode(), entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            return new
        raise Conflict(endpoint_id)

    async def delete(self, endpoint_id: str) -> bool:
        if await self.get(endpoint_id) is None:
            return False
        await self.kv.delete(endpoint_id)
        return True

    async def watch(self, on_change: OnChange) -> None:
        self._watcher = await self.kv.watchall()
        self._watching = asyncio.get_running_loop().create_task(self._follow(on_change))

    async def _follow(self, on_change: OnChange) -> None:
        assert self._watcher is not None
        async for entry in self._watcher:
            if entry is None:  # the marker after the initial values
                continue
            deleted = entry.operation in ("DEL", "PURGE") or not entry.value
            try:
                endpoint = None if deleted else Endpoint.model_validate_json(entry.value or b"")
                await on_change(entry.key, endpoint)
            except Exception:
                log.exception("applying the change of endpoint %s failed", entry.key)

    async def close(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._watcher.stop()  # type: ignore[no-untyped-call]
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)


class StreamJournal(Journal):
    """A stream over `<base>.*`, one subject per key."""

    def __init__(
        self,
        js: JetStreamContext,
        base: str,
        *,
        max_age_s: float,
        max_per_subject: int = -1,
    ) -> None:
        self._js, self.base = js, base
        self.stream = base.replace(".", "_")
        self._max_age_s, self._max_per_subject = max_age_s, max_per_subject

    async def open(self) -> None:
        try:
            await self._js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await self._js.add_stream(
                name=self.stream,
                subjects=[f"{self.base}.*"],
                max_age=self._max_age_s,
                max_msgs_per_subject=self._max_per_subject,
                duplicate_window=120.0,
                storage=api.StorageType.FILE,
            )

    async def append(self, key: str, data: bytes, *, msg_id: str | None = None) -> None:
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        await self._js.publish(f"{self.base}.{key}", data, stream=self.stream, headers=headers)

    async def scan(self, key: str | None, *, limit: int, newest_first: bool = False) -> list[Entry]:
        subject = f"{self.base}.{key}" if key else f"{self.base}.*"
        found: list[Entry] = []
        seq = 1
        # Forward only (JetStream has no "previous"): newest first reads up to
        # _MAX_SCAN records and keeps the last ones.
        wanted = _MAX_SCAN if newest_first else limit
        while len(found) < wanted:
            try:
                raw = await self._js.get_msg(self.stream, seq=seq, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                break
            if raw.seq is None:
                break
            found.append(self._entry(raw.seq, raw.subject, raw.data))
            seq = raw.seq + 1
        return found[::-1][:limit] if newest_first else found

    def _entry(self, seq: int, subject: str | None, data: bytes | None) -> Entry:
        return Entry(seq, (subject or "").rsplit(".", 1)[-1], data or b"")

    async def get(self, seq: int) -> Entry | None:
        try:
            raw = await self._js.get_msg(self.stream, seq=seq)
        except nats.js.errors.NotFoundError:
            return None
        return self._entry(seq, raw.subject, raw.data)

    async def remove(self, seq: int) -> bool:
        try:
            return await self._js.delete_msg(self.stream, seq)
        except nats.js.errors.NotFoundError:
            return False


async def forget_endpoint(bus: NatsBus, endpoint_id: str, consumers: dict[str, str]) -> None:
    """The endpoint is gone: drop its durable consumers (topic -> name) and its replays."""
    js = bus.jetstream()
    for topic, name in consumers.items():
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(stream_name(topic), name)
    replay_topics = [t for t in consumers if t != bus.topics.events()]
    for topic in replay_topics:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream_name(topic))
