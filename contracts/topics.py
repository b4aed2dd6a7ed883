"""Topic (NATS subject / Kafka topic) names, under one configurable prefix."""

from __future__ import annotations

import re

# Legal in both a NATS subject token sequence and a Kafka topic name.
NAME_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
_NAME = re.compile(NAME_PATTERN)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"{name!r} is not a valid topic name: "
            "use letters, digits, '-', '_', and '.' between them"
        )
    return name


class Topics:
    """`rg.req.<route>`, `rg.reply.<node>`, `rg.evt.<event>`, `rg.dlq.<name>`;
    `rg.events`: the durable stream of business events the webhook bridge delivers; and
    for WebSockets `rg.ws.node.<node>` (pushes for the sockets one node holds) and
    `rg.ws.chan` (channel pushes, which every node hears: one subject, so it works
    the same on NATS and Kafka)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "rg") -> None:
        self.prefix = check_name(prefix)

    def request(self, name: str) -> str:
        return f"{self.prefix}.req.{name}"

    def reply(self, node_id: str) -> str:
        return f"{self.prefix}.reply.{node_id}"

    def event(self, name: str) -> str:
        return f"{self.prefix}.evt.{name}"

    def events(self) -> str:
        """The durable event stream (`rg.evt.*` carries fire-and-forget notices)."""
        return f"{self.prefix}.events"

    def async_requests(self) -> str:
        """The durable stream of accepted async requests the async runner takes."""
        return f"{self.prefix}.async"

    def async_done(self) -> str:
        """Notices that an async result was stored (every ingress node hears them)."""
        return f"{self.prefix}.async.done"

    def webhooks(self, name: str) -> str:
        """The webhook bridge's own durable topics (replays, delivery log)."""
        return f"{self.prefix}.webhooks.{name}"

    def dead_letter(self, name: str) -> str:
        return f"{self.prefix}.dlq.{name}"

    def ws_node(self, node_id: str) -> str:
        return f"{self.prefix}.ws.node.{node_id}"

    def ws_channels(self) -> str:
        return f"{self.prefix}.ws.chan"
