"""Fixtures shared by the ingress tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.counting_upstream import CountingUpstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[CountingUpstream]:
    """A real upstream that counts what reaches it (one per test module)."""
    server = CountingUpstream().start()
    yield server
    server.stop()
