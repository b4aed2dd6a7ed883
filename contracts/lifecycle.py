"""Process lifecycle shared by every role: stopping on a signal, within a bound."""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("relaygate")

SHUTDOWN_GRACE_S = 8.0


def exit_if_stuck(grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """Arm a watchdog when shutdown starts: if the process has not exited `grace_s` later
    (a client library stuck reconnecting to a broker that died with us, say), end it.
    A role that cannot stop cleanly must still stop: `relaygate up` promises that no
    process is left behind."""

    def expire() -> None:
        log.error("shutdown took longer than %.0fs; exiting now", grace_s)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(grace_s, expire)
    timer.daemon = True
    timer.start()
