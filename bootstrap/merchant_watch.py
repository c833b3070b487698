"""Each process follows the sub-merchants a service provider adds and changes: it polls the directory's records.

One thread per process (every worker of ``serve``, the work process), reading new events each second: a
sub-merchant added through one worker is served by all of them within seconds, with no restart
(``application.submerchants``).  Only a deployment with ``[[providers]]`` polls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from adapters.persistence import is_unavailable
from application.submerchants import SubMerchants

log = logging.getLogger("zhangben.merchants")
WATCH_SECONDS = 1.0


def watch_sub_merchants(sub_merchants: SubMerchants, interval: float = WATCH_SECONDS) -> Callable[[], None]:
    """Start following on a thread of its own; returns how to stop it."""
    stop = threading.Event()

    def run() -> None:
        quiet = False  # an outage of the directory is logged once, not every second
        while not stop.wait(interval):
            try:
                sub_merchants.follow()
                quiet = False
            except Exception as exc:  # noqa: BLE001 — the watch outlives an outage; it tries again next poll
                if not quiet:
                    log.warning("sub-merchants not read (%s); trying again every %.0f s", exc, interval)
                    quiet = is_unavailable(exc)

    thread = threading.Thread(target=run, name="sub-merchants", daemon=True)
    thread.start()

    def stopped() -> None:
        stop.set()
        thread.join(timeout=15)

    return stopped
