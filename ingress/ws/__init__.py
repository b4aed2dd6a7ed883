"""WebSockets at the ingress: `/ws/<route>` is authenticated at the handshake with
the route's policies, each client message goes to the route's topic, and pushes
from workers reach the socket on whichever node holds it (contracts/websocket.py)."""

from ingress.ws.hub import WebSockets

__all__ = ["WebSockets"]
