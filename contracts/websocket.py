"""WebSocket traffic on the bus: envelope types and connection ids, shared by the
ingress (which holds the sockets) and the SDK (which answers and pushes).

Ingress -> the route's topic (`<prefix>.req.<topic>`), fire and forget:
    `ws.open`, `ws.message`, `ws.close`; `correlationid` is the connection id,
    `replyto` the push topic of the node holding the socket, `subject` the route,
    `principal` who authenticated at the handshake. `ws.open` also carries the
    handshake's `http` (path, query, headers, client).
Anyone -> the node (`<prefix>.ws.node.<node>`): `ws.push` (to `correlationid`),
    `ws.join` / `ws.leave` (`correlationid` joins / leaves channel `subject`),
    `ws.disconnect` (close it; the code in `http.status`, the reason in `data`).
Anyone -> every node (`<prefix>.ws.chan`): `ws.push` to channel `subject`.

A text frame travels with `datacontenttype` TEXT, a binary one with BINARY. The
connection id is `<node id>:<random>`: whoever pushes finds the node in the id,
so no registry outside the nodes is needed (node ids have no ':').
"""

from __future__ import annotations

import re

from contracts.envelope import Envelope, HttpInfo, new_id, now_ms
from contracts.topics import Topics

OPEN = "ws.open"
MESSAGE = "ws.message"
CLOSE = "ws.close"
TO_WORKER = frozenset({OPEN, MESSAGE, CLOSE})

PUSH = "ws.push"
JOIN = "ws.join"
LEAVE = "ws.leave"
DISCONNECT = "ws.disconnect"

TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"

_SEPARATOR = ":"
_NODE = re.compile(r"^[A-Za-z0-9_-]+$")  # as `ingress.node_id`: one topic token


def connection_id(node_id: str) -> str:
    return f"{node_id}{_SEPARATOR}{new_id()}"


def node_of(connection: str) -> str:
    """The node holding `connection`; ValueError when it is not a connection id."""
    node, separator, rest = connection.rpartition(_SEPARATOR)
    if not separator or not rest or not _NODE.match(node):
        raise ValueError(f"{connection!r} is not a WebSocket connection id")
    return node


def push_topic(topics: Topics, connection: str) -> str:
    return topics.ws_node(node_of(connection))


def control(
    kind: str,
    connection: str,
    *,
    source: str,
    subject: str | None = None,
    data: bytes = b"",
    text: bool = True,
    code: int | None = None,
) -> Envelope:
    """An envelope for a node or for every node (see the module docstring)."""
    return Envelope(
        id=new_id(),
        source=source,
        type=kind,
        time=now_ms(),
        subject=subject,
        datacontenttype=TEXT if text else BINARY,
        data=data,
        correlationid=connection,
        http=HttpInfo(status=code) if code is not None else None,
    )
