"""What a subscriber receives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Message:
    topic: str
    data: bytes
    headers: Mapping[str, str] | None = None


Handler = Callable[[Message], Awaitable[None]]
