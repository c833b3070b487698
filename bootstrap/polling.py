"""A process's pollers of the directory (the partition map, the sub-merchants): a step each interval on a thread
of its own, an outage logged once, and a way to stop it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from adapters.persistence import is_unavailable


def poll(name: str, interval: float, step: Callable[[], object], log: logging.Logger, what: str) -> Callable[[], None]:
    """Run ``step`` every ``interval`` seconds until stopped; returns how to stop it (waits for the thread)."""
    stop = threading.Event()

    def run() -> None:
        quiet = False  # an outage of the directory's cell is logged once, not every second
        while not stop.wait(interval):
            try:
                step()
                quiet = False
            except Exception as exc:  # noqa: BLE001 — the poller outlives a failover; it tries again next time
                if not quiet:
                    log.warning("%s not read (%s); trying again every %.0f s", what, exc, interval)
                    quiet = is_unavailable(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()

    def stopped() -> None:
        stop.set()
        thread.join(timeout=15)

    return stopped
