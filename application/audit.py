"""Refused callbacks, kept for auditors: a forged or stale callback is evidence (rule 3).

Each refusal is an event of its own (``RefusedCallback``), bounded in size,
attributed to the merchant whose notify path it came to — before any
signature is checked — so a merchant's auditor sees its own and only the
deployment's operator sees those sent to a shared path.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime

from eventsourcing.persistence import IntegrityError

from application.ledger import Ledger
from domain.audit import Arrival, RefusedCallback


class Audit:
    """The record of refused callbacks, over the ledger's store."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def record_refused_callback(self, arrival: Arrival, reason: str) -> RefusedCallback:
        """Keep a refused callback, bounded: who sent it, when, why, its headers, its first 4 KB and hash, and the
        merchant whose notify path it came to (None on a shared path)."""
        refused = RefusedCallback.of(arrival, reason, self.ledger.clock())
        try:
            self.ledger.save(refused)
        except IntegrityError:
            pass  # the very same refusal at the very same instant: already kept
        return refused

    def refused_callbacks(self, limit: int = 1000) -> list[RefusedCallback]:
        return list(itertools.islice(self.refused_callbacks_since(), limit))

    def refused_callbacks_since(self, after: int = 0, page: int = 500) -> Iterator[RefusedCallback]:
        """Every refused callback kept, oldest first, read page by page from the log."""
        return self.ledger.created(RefusedCallback.Created.TOPIC, after, page)

    def refused_callbacks_seen_by(
        self,
        mchid: str | None,
        reason: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[RefusedCallback]:
        """The refusals one merchant's auditor may read (``mchid``), or every one (None: the deployment's
        operator), oldest first, filtered by time and reason words.

        A refusal is attributed by the notify path it came to (``/wechatpay/v3/notify/{mchid}``), before any
        signature is checked; one on a shared path names no merchant and only the operator sees it.
        """
        wanted = reason.lower()
        return [
            r
            for r in self.refused_callbacks_since()
            if (mchid is None or r.mchid == mchid)
            and (since is None or r.received_at >= since)
            and (until is None or r.received_at < until)
            and wanted in r.reason.lower()
        ]
