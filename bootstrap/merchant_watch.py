"""Each process follows the sub-merchants a service provider adds and changes: it polls the directory's records.

One thread per process (every worker of ``serve``, the work process), reading new events each second: a
sub-merchant added through one worker is served by all of them within seconds, with no restart
(``application.submerchants``).  Only a deployment with ``[[providers]]`` polls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from application.submerchants import SubMerchants
from bootstrap.polling import poll

log = logging.getLogger("zhangben.merchants")
WATCH_SECONDS = 1.0


BACKOFF_SECONDS = 15.0  # while the directory fails, polls thin out to one in this long


def watch_sub_merchants(sub_merchants: SubMerchants, interval: float = WATCH_SECONDS) -> Callable[[], None]:
    """Start following on a thread of its own; returns how to stop it.  While the directory's cell is down (this
    process's gate closed, or a read failed) it waits: a change to a sub-merchant waits with the directory."""
    return poll(
        "sub-merchants", interval, sub_merchants.follow, log, "sub-merchants", backoff=BACKOFF_SECONDS,
        ready=lambda: sub_merchants.keys.available(),  # read each time: the HTTP gates set it after start
    )  # fmt: skip
