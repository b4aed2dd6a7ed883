"""etcd discovery through etcd's v3 JSON gateway (`/v3/kv/range`, `/v3/watch`): list
the keys under `<prefix><service>/`, then watch them from the next revision, so a change
(a put, a delete, a lease that expired) applies within one round trip.

Each key holds one instance as JSON `{"url": ..., "group": 0, "weight": 1}`. A key
whose value is not such a record is skipped with a warning.

Why not a client library: etcd's Python clients speak gRPC (grpcio and protobuf, heavy
native dependencies), and the maintained asyncio one (aetcd) is young; the three calls
needed here are plain HTTP+JSON over aiohttp, which the gateway already uses."""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from contracts.config import EtcdDiscovery, UpstreamInstance
from workers.routing.discovery.base import DiscoveryUnavailable, Source, Update, parse_instance

log = logging.getLogger("relaygate.routing.discovery")

_REQUEST_TIMEOUT_S = 5.0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key after every key that starts with `prefix` (etcd's range_end)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


class EtcdSource(Source):
    kind = "etcd"

    def __init__(self, upstream: str, options: EtcdDiscovery) -> None:
        self._options = options
        self._key_prefix = f"{options.prefix}{options.service or upstream}/".encode()
        self._endpoint = 0

    def describe(self) -> str:
        return f"{self._options.endpoints[self._endpoint]} {self._key_prefix.decode()}"

    async def watch(self, update: Update) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=_REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            try:
                await self._list_and_watch(session, update)
            except aiohttp.ClientError as exc:
                self._next_endpoint()
                raise DiscoveryUnavailable(f"etcd: {exc}") from exc
            except DiscoveryUnavailable:
                self._next_endpoint()
                raise

    def _next_endpoint(self) -> None:
        self._endpoint = (self._endpoint + 1) % len(self._options.endpoints)

    async def _list_and_watch(self, session: aiohttp.ClientSession, update: Update) -> None:
        base = self._options.endpoints[self._endpoint]
        span = {"key": b64(self._key_prefix), "range_end": b64(prefix_end(self._key_prefix))}
        async with session.post(
            f"{base}/v3/kv/range", json=span, timeout=aiohttp.ClientTimeout(_REQUEST_TIMEOUT_S)
        ) as reply:
            listing = await _json(reply)
        revision = int(listing["header"]["revision"])
        found: dict[bytes, UpstreamInstance] = {}
        for kv in listing.get("kvs", ()):
            self._put(found, kv)
        update(list(found.values()))
        watch = {"create_request": {**span, "start_revision": str(revision + 1)}}
        async with session.post(f"{base}/v3/watch", json=watch) as reply:
            if reply.status != 200:
                await _json(reply)  # raises with etcd's message
            async for line in reply.content:
                if not line.strip():
                    continue
                message = orjson.loads(line)
                if "error" in message:
                    raise DiscoveryUnavailable(f"etcd watch: {_message(message['error'])}")
                result = message.get("result", {})
                if result.get("canceled") or result.get("compact_revision"):
                    # Compacted past our revision (or cancelled): list again.
                    reason = result.get("cancel_reason") or "compacted"
                    raise DiscoveryUnavailable(f"etcd watch cancelled: {reason}")
                events = result.get("events")
                if not events:
                    continue
                for event in events:
                    kv = event["kv"]
                    if event.get("type") == "DELETE":
                        found.pop(unb64(kv["key"]), None)
                    else:  # PUT, the enum's default, is left out of the JSON
                        self._put(found, kv)
                update(list(found.values()))

    def _put(self, found: dict[bytes, UpstreamInstance], kv: Mapping[str, Any]) -> None:
        key = unb64(kv["key"])
        try:
            found[key] = parse_instance(unb64(kv.get("value", "")))
        except ValueError as exc:
            found.pop(key, None)
            log.warning("etcd key %s skipped: %s", key.decode(errors="replace"), exc)


async def _json(reply: aiohttp.ClientResponse) -> dict[str, Any]:
    body = await reply.read()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if reply.status != 200 or not isinstance(data, dict):
        detail = _message(data) if isinstance(data, dict) else body[:200].decode(errors="replace")
        raise DiscoveryUnavailable(f"etcd answered {reply.status}: {detail}")
    return data


def _message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("error") or error)
    return str(error)
