"""The built-in routing worker: serves `<prefix>.req.<route>` for every route whose
target is an upstream, forwarding each request over HTTP with `HttpProxy`.

    worker = build_routing(config)   # in a running event loop: opens the HTTP pools
    await worker.start(bus)
    ...
    await worker.close()
"""

from __future__ import annotations

import aiohttp

from contracts.bus import Bus, Subscription
from contracts.codec import EnvelopeCodec
from contracts.config import Config, UpstreamTarget
from contracts.topics import Topics
from workers.routing.proxy import HttpProxy
from workers.routing.session import open_session
from workers.sdk import EnvelopeProcessor, serve_on_bus

__all__ = ["GROUP", "HttpProxy", "RoutingWorker", "build_routing"]

GROUP = "workers.routing"


class RoutingWorker:
    """Owns the upstream sessions and one proxy per route topic."""

    def __init__(
        self,
        proxies: dict[str, HttpProxy],
        sessions: list[aiohttp.ClientSession],
        codec: EnvelopeCodec | None = None,
    ) -> None:
        self.proxies = proxies
        self._sessions = sessions
        self._codec = codec or EnvelopeCodec()
        self._subscriptions: list[Subscription] = []

    @property
    def topics(self) -> list[str]:
        """The request topics this worker serves, one per upstream route."""
        return list(self.proxies)

    async def start(self, bus: Bus) -> None:
        """Subscribe every route topic, in the shared group so that replicas split the load."""
        source = f"relaygate://worker/{bus.node_id}"
        for topic, proxy in self.proxies.items():
            processor = EnvelopeProcessor(proxy, codec=self._codec, source=source)
            self._subscriptions.append(await serve_on_bus(bus, topic, GROUP, processor))

    async def close(self) -> None:
        """Stop the subscriptions (requests in flight finish), then close the pools."""
        for subscription in self._subscriptions:
            await subscription.stop()
        self._subscriptions.clear()
        for session in self._sessions:
            await session.close()
        self._sessions.clear()


def build_routing(config: Config, codec: EnvelopeCodec | None = None) -> RoutingWorker:
    """One session per upstream that a route uses, one proxy per upstream route.

    Call it from a running event loop: aiohttp binds the sessions to it.
    """
    topics = Topics(config.bus.prefix)
    default_timeout_s = config.ingress.timeout_ms / 1000
    routes = [(route, route.to) for route in config.routes if isinstance(route.to, UpstreamTarget)]
    sessions: dict[str, aiohttp.ClientSession] = {}
    proxies: dict[str, HttpProxy] = {}
    for route, target in routes:
        upstream = config.upstreams[target.upstream]
        session = sessions.get(target.upstream)
        if session is None:
            session = sessions[target.upstream] = open_session(upstream)
        proxies[topics.request(route.name)] = HttpProxy(
            route, upstream, session, default_timeout_s=default_timeout_s
        )
    return RoutingWorker(proxies, list(sessions.values()), codec)
