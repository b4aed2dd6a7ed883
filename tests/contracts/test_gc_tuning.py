"""tune_gc: what start-up loaded leaves the collector's sight, young collections run
less often, and cycles made afterwards are still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from contracts.gc_tuning import GEN0_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_cycles_are_still_found() -> None:
    tune_gc()
    assert gc.get_freeze_count() > 1000  # modules, classes, config loaded by now
    assert gc.get_threshold()[0] == GEN0_THRESHOLD
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
