"""The built-in routing worker: serves `<prefix>.req.<route>` for every route whose
target is an upstream, forwarding each request over HTTP with `HttpProxy`, and keeps
per upstream its instances' health, a circuit breaker and a retry budget
(`UpstreamPool`), published for the admin API by `StatePublisher`.

    worker = build_routing(config)   # in a running event loop: opens the HTTP pools
    await worker.start(bus)
    ...
    await worker.close()
"""

from __future__ import annotations

from contracts.bus import Bus, Subscription
from contracts.codec import EnvelopeCodec
from contracts.config import Config, UpstreamTarget
from contracts.topics import Topics
from workers.routing.proxy import HttpProxy
from workers.routing.session import open_session
from workers.routing.state import STATE_EVENT, StatePublisher
from workers.routing.upstream import UpstreamPool
from workers.sdk import EnvelopeProcessor, serve_on_bus

__all__ = [
    "GROUP",
    "STATE_EVENT",
    "HttpProxy",
    "RoutingWorker",
    "UpstreamPool",
    "build_routing",
]

GROUP = "workers.routing"


class RoutingWorker:
    """Owns the upstream pools and one proxy per route topic."""

    def __init__(
        self,
        proxies: dict[str, HttpProxy],
        pools: dict[str, UpstreamPool],
        codec: EnvelopeCodec | None = None,
        *,
        state_interval_s: float = 1.0,
    ) -> None:
        self.proxies = proxies
        self.pools = pools
        self._codec = codec or EnvelopeCodec()
        self._state_interval_s = state_interval_s
        self._subscriptions: list[Subscription] = []
        self._publisher: StatePublisher | None = None

    @property
    def topics(self) -> list[str]:
        """The request topics this worker serves, one per upstream route."""
        return list(self.proxies)

    async def start(self, bus: Bus) -> None:
        """Start the health checks and the state updates, then subscribe every route
        topic in the shared group so that replicas split the load."""
        for pool in self.pools.values():
            pool.start(bus)
        self._publisher = StatePublisher(bus, self.pools, self._state_interval_s)
        self._publisher.start()
        source = f"relaygate://worker/{bus.node_id}"
        for topic, proxy in self.proxies.items():
            processor = EnvelopeProcessor(proxy, codec=self._codec, source=source)
            processor.otel_api = False  # the proxy makes its spans with our tracer
            self._subscriptions.append(await serve_on_bus(bus, topic, GROUP, processor))

    def adopt_instances(self, previous: RoutingWorker) -> None:
        """Before `start` on a reload: discovered upstreams whose discovery config did not
        change begin with the instances `previous` knew, so their routes need not wait
        for the first answer of the source (and answer 503 meanwhile)."""
        for name, pool in self.pools.items():
            old = previous.pools.get(name)
            if (
                old is not None
                and pool.options.discovered
                and old.options.discovery == pool.options.discovery
            ):
                pool.set_instances(old.known_instances())

    async def close(self) -> None:
        """Stop the subscriptions (requests in flight finish), then the pools."""
        for subscription in self._subscriptions:
            await subscription.stop()
        self._subscriptions.clear()
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None
        for pool in self.pools.values():
            await pool.close()
        self.pools.clear()


def build_routing(
    config: Config, codec: EnvelopeCodec | None = None, *, state_interval_s: float = 1.0
) -> RoutingWorker:
    """One pool per upstream that a route uses, one proxy per upstream route.

    Call it from a running event loop: aiohttp binds the sessions to it.
    """
    topics = Topics(config.bus.prefix)
    default_timeout_s = config.ingress.timeout_ms / 1000
    routes = [(route, route.to) for route in config.routes if isinstance(route.to, UpstreamTarget)]
    pools: dict[str, UpstreamPool] = {}
    proxies: dict[str, HttpProxy] = {}
    for route, target in routes:
        pool = pools.get(target.upstream)
        if pool is None:
            upstream = config.upstreams[target.upstream]
            pool = pools[target.upstream] = UpstreamPool(
                target.upstream, upstream, open_session(upstream)
            )
        proxies[topics.request(route.name)] = HttpProxy(
            route, pool, default_timeout_s=default_timeout_s
        )
    return RoutingWorker(proxies, pools, codec, state_interval_s=state_interval_s)
