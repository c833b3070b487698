"""Fail fast while the database is down, and notice by itself when it is back (docs/operations.md, "Outages").

The event store's library retries a failed statement ten times, each waiting
for a pooled connection, so a request that meets a dead database would hang
for many seconds — and every request after it would too, until the worker's
threads are all stuck.  A request that fails with "the database is
unavailable" (or hangs past the request budget) has the database checked off
its path with a fresh connection; if it does not answer, the gate closes: from
then on requests get a 503 at once, while one thread probes the server twice a
second.  When a probe succeeds (and the event store's pool has replaced its dead
connections), the gate opens again and requests go through.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("zhangben.database")

PROBE_INTERVAL_SECONDS = 0.5
REFRESH_SECONDS = 5.0  # a hung call replaces the pools' connections at most this often


class DatabaseGate:
    def __init__(
        self,
        probe: Callable[[], None],
        interval: float = PROBE_INTERVAL_SECONDS,
        name: str = "",
        back: Callable[[], None] = lambda: None,
    ) -> None:
        self._probe = probe
        self._back = back  # run once the probe passes, before the gate opens: the pools' old connections replaced
        self._what = f"cell {name}" if name else "database"
        self._interval = interval
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._checking = False
        self._refreshed = -REFRESH_SECONDS
        self._prober: threading.Thread | None = None

    @property
    def is_open(self) -> bool:
        """Requests may use the database (no outage noticed, or the last probe reached it)."""
        return self._down_since is None

    def suspect(self, reason: str, hung: bool = False) -> None:
        """A call failed as if the database were down (or ``hung``: got no answer within its budget): check once,
        off the request's path, before closing the gate.

        A call that was on the wire when the server restarted fails although
        the database is back (idle pooled connections are checked at checkout,
        ``adapters/pg_liveness.py``); the check passes, and the gate stays open.
        A call that hung while a fresh connection answers may be on a pooled
        connection to a deposed primary frozen in place (its kernel still
        acknowledges, so the connection never fails): the pools are refreshed.
        """
        with self._lock:
            if self._down_since is not None or self._checking:
                return
            self._checking = True
        threading.Thread(target=self._check_once, args=(reason, hung), name="db-check", daemon=True).start()

    def _check_once(self, reason: str, hung: bool) -> None:
        try:
            self._probe()
        except Exception:  # noqa: BLE001 — really down: close the gate and probe until it is back
            self.trip(reason)
            return
        finally:
            with self._lock:
                self._checking = False
        if hung:
            self._refresh()

    def _refresh(self) -> None:
        """The pools' connections replaced (``back``), at most once every ``REFRESH_SECONDS``."""
        with self._lock:
            now = time.monotonic()
            if now - self._refreshed < REFRESH_SECONDS:
                return
            self._refreshed = now
        try:
            self._back()
        except Exception as exc:  # noqa: BLE001 — the next hung call tries again
            log.warning("%s: pooled connections not replaced (%s)", self._what, exc)
        else:
            log.warning("%s: a call hung while the database answers; pooled connections replaced", self._what)

    def trip(self, reason: str) -> None:
        """An outage was seen: close the gate and start probing (once, however many requests saw it)."""
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
            log.warning("%s unavailable (%s); answering 503 until it is back", self._what, reason[:200])
            self._prober = threading.Thread(target=self._probe_until_back, name="db-probe", daemon=True)
            self._prober.start()

    def _probe_until_back(self) -> None:
        while True:
            time.sleep(self._interval)
            try:
                self._probe()
            except Exception:  # noqa: BLE001, S112 — still down: probe again
                continue
            try:
                self._back()
            except Exception as exc:  # noqa: BLE001 — the pools then replace their dead connections as they meet them
                log.warning("%s: pooled connections not replaced (%s)", self._what, exc)
            with self._lock:
                down_for = time.monotonic() - (self._down_since or time.monotonic())
                self._down_since = None
            log.warning("%s reachable again after %.1fs", self._what, down_for)
            return


class DatabaseGates:
    """One gate per cell (``[[cells]]``; one, ``main``, without): a cell failing over closes its own gate only.

    Requests for merchants on an open cell go through while another cell is
    down; the worker answers every request 503 at once only when no cell
    answers.  Suspicion (a request failed as if its database were down) is
    checked on every cell, each by its own probe, off the request's path.
    """

    def __init__(
        self,
        probes: dict[str, Callable[[], None]],
        interval: float = PROBE_INTERVAL_SECONDS,
        backs: dict[str, Callable[[], None]] | None = None,
    ) -> None:
        named, backs = len(probes) > 1, backs or {}
        self.gates = {
            cell: DatabaseGate(probe, interval, cell if named else "", backs.get(cell, lambda: None))
            for cell, probe in probes.items()
        }

    @property
    def is_open(self) -> bool:
        """Some cell takes requests (with one cell: that one does)."""
        return any(gate.is_open for gate in self.gates.values())

    def cell_open(self, cell: str) -> bool:
        gate = self.gates.get(cell)
        return gate is None or gate.is_open

    def suspect(self, reason: str, hung: bool = False) -> None:
        for gate in self.gates.values():
            gate.suspect(reason, hung)

    def trip(self, reason: str) -> None:
        """A slow request met an unanswering database: each cell is checked, and those that do not answer close."""
        if len(self.gates) == 1:
            next(iter(self.gates.values())).trip(reason)
            return
        self.suspect(reason)
