"""Bus errors. The ingress maps each to one HTTP status.

BusError
├── NotConnected       bus unreachable                       -> 503
│   └── TopicUnavailable  topic missing, may not be created  -> 503
├── NoResponders       nobody subscribed to the topic        -> 503
├── RequestTimeout     no reply before the deadline          -> 504
├── Backpressure       pending-reply map full                -> 503 + Retry-After
└── PayloadTooLarge    message above the broker's limit      -> 413
"""

from __future__ import annotations


class BusError(Exception):
    """Base of every error the bus facade raises."""


class NotConnected(BusError):
    pass


class TopicUnavailable(NotConnected):
    """The topic does not exist and may not be created, or creating it failed."""


class NoResponders(BusError):
    pass


class RequestTimeout(BusError):
    pass


class Backpressure(BusError):
    pass


class PayloadTooLarge(BusError):
    pass
