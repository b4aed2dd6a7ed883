"""The garbage collector, tuned for a long-running server process.

A request allocates a few hundred container objects (scope, headers, envelope, spans)
that die with it; CPython's defaults run a young collection every 700 of them and,
every 100 young ones, a full collection that walks every object the process holds:
the tens of thousands loaded at start-up (modules, config, schemas) that never die.
After start-up those are moved out of the collector's sight (`gc.freeze`), and young
collections run less often. Reference counting still frees almost everything at once;
the collector only finds cycles, and finds them all the same."""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 7_000


def tune_gc() -> None:
    """Call once the process has started (everything loaded, listeners up)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
