"""A process's pollers of the directory (the partition map, the sub-merchants): a step each interval on a thread
of its own, an outage logged once, and a way to stop it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from adapters.persistence import is_unavailable


def poll(
    name: str,
    interval: float,
    step: Callable[[], object],
    log: logging.Logger,
    what: str,
    *,
    backoff: float | None = None,
    ready: Callable[[], bool] = lambda: True,
) -> Callable[[], None]:
    """Run ``step`` every ``interval`` seconds until stopped; returns how to stop it (waits for the thread).

    With ``backoff``, a failed step doubles the wait up to that many seconds (reset by a success): a failing read
    is retried by the store's library ten times over two seconds, and a poller that must not press a cell in
    failover (its connection attempts compete with the other cells' work for the same cores) waits longer.
    ``ready`` false skips a turn (a process's gate says the directory's cell is down).
    """
    stop = threading.Event()

    def run() -> None:
        quiet = False  # an outage of the directory's cell is logged once, not every second
        wait = interval
        while not stop.wait(wait):
            if not ready():
                continue
            try:
                step()
                quiet, wait = False, interval
            except Exception as exc:  # noqa: BLE001 — the poller outlives a failover; it tries again next time
                if backoff is not None:
                    wait = min(backoff, wait * 2)
                if not quiet:
                    log.warning("%s not read (%s); trying again in %.0f s", what, exc, wait)
                    quiet = is_unavailable(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()

    def stopped() -> None:
        stop.set()
        thread.join(timeout=15)

    return stopped
