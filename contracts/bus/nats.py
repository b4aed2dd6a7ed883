"""NATS binding (nats-py). Queue groups share load; replies go to `<inbox>.<cid>`
so that the server's "no responders" status names the request it belongs to."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSub
from nats.errors import MaxPayloadError
from nats.js import JetStreamContext

from contracts.bus.base import Bus, HandlerRunner, Subscription
from contracts.bus.errors import NotConnected, PayloadTooLarge
from contracts.bus.message import Handler, Message
from contracts.topics import Topics

log = logging.getLogger("relaygate.bus.nats")

_NO_RESPONDERS = "503"


class _NatsSubscription(Subscription):
    def __init__(self, sub: NatsSub, runner: HandlerRunner | None) -> None:
        self._sub = sub
        self._runner = runner

    async def stop(self) -> None:
        with contextlib.suppress(nats.errors.ConnectionClosedError):
            await self._sub.unsubscribe()
        if self._runner is not None:
            await self._runner.drain()


class NatsBus(Bus):
    def __init__(
        self, url: str, *, topics: Topics, node_id: str, max_pending: int = 10_000
    ) -> None:
        super().__init__(url, topics=topics, node_id=node_id, max_pending=max_pending)
        self._nc: Client | None = None
        self._inbox_prefix = self.inbox + "."

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def max_payload(self) -> int:
        return self._client.max_payload

    @property
    def reconnects(self) -> int:
        """How often the connection was re-established (JetStream watchers start over)."""
        return int(self._client.stats["reconnects"])

    def jetstream(self) -> JetStreamContext:
        """JetStream on this connection (service discovery's key-value bucket)."""
        return self._client.jetstream()

    @property
    def _client(self) -> Client:
        if self._nc is None:
            raise NotConnected(f"not connected to {self.url}")
        return self._nc

    async def connect(self) -> None:
        async def on_error(exc: Exception) -> None:
            log.warning("nats: %s", exc)

        async def on_disconnect() -> None:
            log.warning("nats: disconnected from %s", self.url)

        async def on_reconnect() -> None:
            log.info("nats: reconnected to %s", self.url)

        self._nc = await nats.connect(
            self.url,
            name=f"relaygate-{self.node_id}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            allow_reconnect=True,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            pending_size=64 * 1024 * 1024,
            # Shutdown drains subscriptions; if the server died with us, don't wait 30 s.
            drain_timeout=2,
        )

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            # Drain only a live connection. While the server is gone, drain raises and
            # the reconnect loop keeps going; close() stops it so the process can exit.
            try:
                if nc.is_connected:
                    await nc.drain()
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("nats: drain failed (%s); closing", exc)
            finally:
                if not nc.is_closed:
                    await nc.close()
        self.pending.fail_all(NotConnected("bus closed"))
        self._inbox = None

    async def publish(
        self, topic: str, data: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        try:
            await self._client.publish(topic, data, headers=dict(headers) if headers else None)
        except MaxPayloadError as exc:
            raise PayloadTooLarge(str(exc)) from exc
        except nats.errors.ConnectionClosedError as exc:
            raise NotConnected(str(exc)) from exc

    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        group: str | None = None,
        concurrency: int = 256,
    ) -> Subscription:
        runner = HandlerRunner(handler, concurrency)

        async def on_msg(msg: Msg) -> None:
            # nats-py awaits this callback before taking the next message, so hand
            # the work to a task: handlers then run concurrently, in arrival order.
            await runner.submit(Message(msg.subject, msg.data, msg.headers))

        sub = await self._client.subscribe(
            topic,
            queue=group or "",
            cb=on_msg,
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=256 * 1024 * 1024,
        )
        return _NatsSubscription(sub, runner)

    def reply_address(self, correlation_id: str) -> str:
        return self._inbox_prefix + correlation_id

    async def reply(self, address: str, data: bytes, *, correlation_id: str) -> None:
        await self.publish(address, data)

    async def _start_inbox(self) -> Subscription:
        prefix_len = len(self._inbox_prefix)
        pending = self.pending

        async def on_reply(msg: Msg) -> None:
            correlation_id = msg.subject[prefix_len:]
            if not msg.data and msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
                pending.no_responders(correlation_id, "the request's topic")
            else:
                pending.resolve(correlation_id, Message(msg.subject, msg.data, msg.headers))

        sub = await self._client.subscribe(
            self._inbox_prefix + "*",
            cb=on_reply,
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=256 * 1024 * 1024,
        )
        return _NatsSubscription(sub, None)

    async def _send_request(self, topic: str, data: bytes, correlation_id: str) -> None:
        try:
            await self._client.publish(topic, data, reply=self._inbox_prefix + correlation_id)
        except MaxPayloadError as exc:
            raise PayloadTooLarge(str(exc)) from exc
        except nats.errors.ConnectionClosedError as exc:
            raise NotConnected(str(exc)) from exc
