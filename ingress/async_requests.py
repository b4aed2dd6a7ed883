"""Asynchronous requests and Idempotency-Key at the ingress.

A request on a `mode: async` route, or with `Prefer: respond-async` where that is
honoured, is stored on the durable stream `<prefix>.async` (the broker acknowledged it)
before the client gets `202 Accepted` with `Location: <results_path>/<id>`; the async
runner (workers/async_runner.py) runs it and stores the answer. `GET` on the location
answers the stored result, `202` while it is pending (held up to `Prefer: wait=N`
seconds, woken by the runner's notice), `404` once it is unknown or expired.

With `Idempotency-Key`, the first request with a key runs and its answer (the reply, or
the 202 of an async request) is kept; the same key with the same request (method, path,
query, body; per principal) gets that answer again, marked `Idempotent-Replayed: true`,
without running twice; with another request it is refused (422); while the first is
still running, 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from contracts.asyncresults import (
    TIMEOUT_HEADER,
    TOPIC_HEADER,
    Answer,
    open_idempotency,
    open_results,
)
from contracts.bus import Bus, Message, NotConnected, PayloadTooLarge, Subscription
from contracts.bus.errors import TopicUnavailable
from contracts.bus.streams import durable
from contracts.codec import EnvelopeCodec
from contracts.config import Config
from contracts.envelope import Envelope, Principal, now_ms
from contracts.keyvalue import Bucket
from ingress.policies import EdgePolicy
from ingress.request import Refused, RequestHead
from ingress.responses import Headers, Send, UpstreamRules, send_reply
from ingress.routes import CompiledRoute

log = logging.getLogger("relaygate.ingress.async")

RequestFn = Callable[[CompiledRoute, Envelope], Awaitable[Envelope]]

_ID = re.compile(r"^[0-9a-f]{24}$")
_MAX_KEY_LENGTH = 255
_STALE_GRACE_MS = 5_000  # a pending key this much past its route's timeout was abandoned


def preferences(head: RequestHead) -> tuple[bool, str | None, float | None]:
    """(`Prefer: respond-async`?, the Idempotency-Key, `Prefer: wait` seconds) in one pass."""
    respond_async = False
    key: str | None = None
    wait: float | None = None
    for name, value in head.headers:
        if name == "prefer":
            for token in value.split(","):
                # `name[=value] *(; parameter)`: parameters mean nothing to us.
                pref, _, arg = token.partition(";")[0].strip().partition("=")
                pref = pref.strip().lower()
                if pref == "respond-async":
                    respond_async = True
                elif pref == "wait":
                    with contextlib.suppress(ValueError):
                        wait = max(0.0, float(arg.strip().strip('"')))
        elif name == "idempotency-key":
            key = value.strip()
            if len(key) >= 2 and key[0] == key[-1] == '"':
                key = key[1:-1]  # a structured-field string, as the draft writes it
    return respond_async, key, wait


class AsyncRequests:
    """Accepts async requests, serves their results, and keeps idempotency keys. The
    stores open on first use (the bus is connected by then)."""

    def __init__(
        self,
        config: Config,
        bus: Bus,
        codec: EnvelopeCodec,
        redis: Any | None,
        request: RequestFn,
    ) -> None:
        self.bus = bus
        self.codec = codec
        self.redis = redis
        self.request = request
        self.topic = bus.topics.async_requests()
        self._results: Bucket | None = None
        self._keys: Bucket | None = None
        self._opening = asyncio.Lock()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._notices: Subscription | None = None
        self.policies: tuple[EdgePolicy, ...] = ()  # of the results path, set by the app
        self.reload(config)

    def reload(self, config: Config) -> None:
        options = config.async_requests
        self.config = config
        self.results_prefix = options.results_path + "/"
        self.honor_prefer = options.honor_prefer
        self.idempotency = config.idempotency.enabled
        self.max_wait_s = options.max_wait_s
        self.retry_after = str(options.retry_after_s)
        self.max_response_bytes = config.idempotency.max_response_bytes
        # Whether a request's headers need reading at all (else only `mode: async` counts).
        self.reads_headers = self.honor_prefer or self.idempotency

    async def aclose(self) -> None:
        if self._notices is not None:
            await self._notices.stop()
            self._notices = None

    async def _open(self) -> tuple[Bucket, Bucket | None]:
        if self._results is None:
            async with self._opening:
                if self._results is None:
                    config = self.config
                    if config.idempotency.enabled:
                        self._keys = await open_idempotency(config, self.bus, self.redis)
                    self._notices = await self.bus.subscribe(
                        self.bus.topics.async_done(), self._on_done
                    )
                    self._results = await open_results(config, self.bus, self.redis)
        return self._results, self._keys

    # ------------------------------------------------------------------ requests

    async def serve(
        self,
        route: CompiledRoute,
        envelope: Envelope,
        head: RequestHead,
        send: Send,
        extra: Headers,
        rules: UpstreamRules | None,
    ) -> bool:
        """Answer the request here when it is async or carries an Idempotency-Key; False
        when it is an ordinary request the caller serves."""
        asynchronous = route.route.mode == "async"
        key: str | None = None
        prefer_async = False
        if self.reads_headers:
            prefer_async, key, _ = preferences(head)
            asynchronous = asynchronous or (prefer_async and self.honor_prefer)
            if not self.idempotency:
                key = None
        if not asynchronous and key is None:
            return False
        if key is not None and not 0 < len(key) <= _MAX_KEY_LENGTH:
            raise Refused(
                400,
                "bad-idempotency-key",
                "Bad Idempotency-Key",
                f"the key must be 1 to {_MAX_KEY_LENGTH} characters",
            )
        _, keys = await self._open()
        if key is not None and keys is not None:
            answer = await self._idempotent(keys, key, route, envelope, asynchronous, prefer_async)
        elif asynchronous:
            answer = await self._accept(route, envelope, prefer_async)
        else:
            return False
        await send_reply(
            send,
            answer.status,
            answer.headers,
            answer.body,
            head.cid,
            head=head.method == "HEAD",
            extra=extra,
            rules=rules,
        )
        return True

    async def _run(
        self, route: CompiledRoute, envelope: Envelope, asynchronous: bool, prefer: bool
    ) -> Answer:
        if asynchronous:
            return await self._accept(route, envelope, prefer)
        reply = await self.request(route, envelope)
        assert reply.http is not None
        return Answer("done", now_ms(), reply.http.status, reply.http.headers, reply.data)

    async def _accept(self, route: CompiledRoute, envelope: Envelope, prefer: bool) -> Answer:
        """Store the request durably, then the 202. The pending record goes first: were it
        written after, a fast runner's result could be overwritten by it."""
        results, _ = await self._open()
        async_id = envelope.id
        owner = envelope.principal.subject if envelope.principal is not None else None
        try:
            await results.create(async_id, Answer("pending", now_ms(), owner=owner).encode())
            await self._publish(route, envelope, results)
        except PayloadTooLarge as exc:
            raise Refused(
                413, "body-too-large", "Request body too large", f"above the bus limit: {exc}"
            ) from None
        except (NotConnected, TopicUnavailable, OSError, TimeoutError) as exc:
            log.warning("async request on %s not stored: %r", route.name, exc)
            raise Refused(
                503,
                "bus-unavailable",
                "Message bus unavailable",
                "the request could not be stored; it was not accepted, retry it",
                [(b"retry-after", self.retry_after.encode())],
            ) from None
        except Exception as exc:  # a store (Redis, JetStream KV) failure: not accepted
            if type(exc).__module__.split(".", 1)[0] not in ("nats", "redis"):
                raise
            log.warning("async request on %s not stored: %r", route.name, exc)
            raise Refused(
                503,
                "store-unavailable",
                "Result store unavailable",
                "the request could not be stored; it was not accepted, retry it",
                [(b"retry-after", self.retry_after.encode())],
            ) from None
        location = self.results_prefix + async_id
        headers = [
            ("location", location),
            ("retry-after", self.retry_after),
            ("content-type", "application/json"),
        ]
        if prefer:
            headers.append(("preference-applied", "respond-async"))
        body = orjson.dumps({"id": async_id, "status": "pending", "location": location})
        return Answer("done", now_ms(), 202, headers, body)

    async def _publish(self, route: CompiledRoute, envelope: Envelope, results: Bucket) -> None:
        """Store the request on the stream; if that fails, forget its pending record (the
        client never learns the id) and let the caller say why."""
        try:
            await durable(self.bus).publish_durable(
                self.topic,
                self.codec.encode(envelope),
                msg_id=envelope.id,
                headers={TOPIC_HEADER: route.topic, TIMEOUT_HEADER: str(route.timeout_ms)},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(results.delete(envelope.id), 1.0)
            raise

    async def _idempotent(
        self,
        keys: Bucket,
        key: str,
        route: CompiledRoute,
        envelope: Envelope,
        asynchronous: bool,
        prefer: bool,
    ) -> Answer:
        owner = envelope.principal.subject if envelope.principal is not None else ""
        slot = hashlib.sha256(f"{owner}\0{key}".encode()).hexdigest()[:40]
        fingerprint = _fingerprint(envelope)
        claim = Answer("pending", now_ms(), fingerprint=fingerprint).encode()
        stale_ms = route.timeout_ms + _STALE_GRACE_MS
        for _ in range(5):
            if await keys.create(slot, claim):
                break
            entry = await keys.get(slot)
            if entry is None:
                continue  # expired in between: claim again
            held = Answer.decode(entry.value)
            if held.fingerprint != fingerprint:
                raise Refused(
                    422,
                    "idempotency-key-reused",
                    "Idempotency-Key reused",
                    "this key was used with a different request (method, path, query or "
                    "body); use a new key for a new request",
                )
            if held.done:
                return _replayed(held)
            if now_ms() - held.at_ms < stale_ms:
                raise Refused(
                    409,
                    "idempotency-key-in-use",
                    "Request with this key in progress",
                    "a request with this Idempotency-Key is still being served; retry later",
                    [(b"retry-after", self.retry_after.encode())],
                )
            if await keys.replace(slot, claim, entry.revision):  # the holder gave up
                break
        else:
            raise Refused(
                409,
                "idempotency-key-in-use",
                "Request with this key in progress",
                "the key is contended; retry later",
                [(b"retry-after", self.retry_after.encode())],
            )
        try:
            answer = await self._run(route, envelope, asynchronous, prefer)
        except BaseException:
            await _release(keys, slot)  # nothing to replay: a retry may run it
            raise
        if len(answer.body) > self.max_response_bytes:
            await _release(keys, slot)
            return answer
        answer.fingerprint = fingerprint
        await keys.put(slot, answer.encode())
        return answer

    # ------------------------------------------------------------------ results

    async def result(
        self, head: RequestHead, send: Send, extra: Headers, principal: Principal | None
    ) -> None:
        """`GET <results_path>/<id>`: the stored answer, 202 while pending, else 404. A
        result of an authenticated request is another principal's business: 404."""
        if head.method not in ("GET", "HEAD"):
            raise Refused(
                405,
                "method-not-allowed",
                "Method not allowed",
                f"{head.method} is not allowed on {head.path}",
                [(b"allow", b"GET, HEAD")],
            )
        async_id = head.path[len(self.results_prefix) :]
        if not _ID.match(async_id):
            raise _unknown(async_id)
        results, _ = await self._open()
        answer = await _load(results, async_id)
        if answer is not None and _readable(answer, principal) and not answer.done:
            _, _, wait = preferences(head)
            if wait:
                answer = await self._wait(results, async_id, min(wait, self.max_wait_s))
        if answer is None or not _readable(answer, principal):
            raise _unknown(async_id)
        if answer.done:
            await send_reply(
                send,
                answer.status,
                answer.headers,
                answer.body,
                head.cid,
                head=head.method == "HEAD",
                extra=extra,
            )
            return
        location = self.results_prefix + async_id
        body = orjson.dumps({"id": async_id, "status": "pending", "location": location})
        headers = [
            ("location", location),
            ("retry-after", self.retry_after),
            ("content-type", "application/json"),
        ]
        await send_reply(
            send, 202, headers, body, head.cid, head=head.method == "HEAD", extra=extra
        )

    async def _wait(self, results: Bucket, async_id: str, seconds: float) -> Answer | None:
        """Hold until the runner's notice for `async_id` (or `seconds`). Notices are not
        durable: the store is read again every second whatever happens."""
        deadline = asyncio.get_running_loop().time() + seconds
        loop = asyncio.get_running_loop()
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return await _load(results, async_id)
            woken: asyncio.Future[None] = loop.create_future()
            waiters = self._waiters.setdefault(async_id, set())
            waiters.add(woken)
            try:
                # Read after registering: a notice between the read and the wait is heard.
                answer = await _load(results, async_id)
                if answer is None or answer.done:
                    return answer
                await asyncio.wait([woken], timeout=min(left, 1.0))
            finally:
                waiters.discard(woken)
                if not waiters:
                    self._waiters.pop(async_id, None)

    async def _on_done(self, message: Message) -> None:
        waiters = self._waiters.get(message.data.decode("ascii", "replace"))
        if waiters:
            for woken in waiters:
                if not woken.done():
                    woken.set_result(None)


def _readable(answer: Answer, principal: Principal | None) -> bool:
    """Who may read a result: anyone holding the id, unless its request was authenticated;
    then only that principal."""
    return answer.owner is None or (principal is not None and principal.subject == answer.owner)


def _fingerprint(envelope: Envelope) -> str:
    http = envelope.http
    assert http is not None
    digest = hashlib.sha256()
    for part in (http.method, http.path, http.query, envelope.subject or ""):
        digest.update(part.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    digest.update(envelope.data)
    return digest.hexdigest()


def _replayed(held: Answer) -> Answer:
    headers = [(n, v) for n, v in held.headers if n != "idempotent-replayed"]
    headers.append(("idempotent-replayed", "true"))
    return Answer("done", held.at_ms, held.status, headers, held.body)


async def _release(keys: Bucket, slot: str) -> None:
    try:
        await keys.delete(slot)
    except Exception:  # the key then expires with its TTL; the claim goes stale first
        log.warning("could not release idempotency key %s", slot, exc_info=True)


async def _load(results: Bucket, async_id: str) -> Answer | None:
    entry = await results.get(async_id)
    return None if entry is None else Answer.decode(entry.value)


def _unknown(async_id: str) -> Refused:
    return Refused(
        404,
        "result-unknown",
        "No such result",
        f"no async request {async_id!r} is known here: the id is wrong, or its result expired",
    )
