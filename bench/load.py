"""Load through HTTP against a running ``zhangben serve``: senders, open loops, CPU of a process tree.

Every load here has a baseline run the same way against the same server
(``GET /healthz`` at the same concurrency or rate), so the figures are read
as ratios and a slower machine does not look like a regression.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Outcome:
    """What a load did: how many, how fast, how long each took, how many failed."""

    count: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


class Clients:
    """One keep-alive ``httpx.Client`` per sender thread."""

    def __init__(self, make: Callable[[], httpx.Client]) -> None:
        self.make = make
        self.local = threading.local()
        self.all: list[httpx.Client] = []
        self.lock = threading.Lock()

    def get(self) -> httpx.Client:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = self.make()
            with self.lock:
                self.all.append(client)
        return client

    def close(self) -> None:
        for client in self.all:
            client.close()


class Senders:
    """``size`` threads, each with its own keep-alive client made before any load is timed.

    Making an ``httpx.Client`` costs milliseconds (its TLS context), so a load
    that made them on the way would measure the clients, not the server.
    """

    def __init__(self, size: int, clients: Clients) -> None:
        self.size = size
        self.pool = ThreadPoolExecutor(size)
        barrier = threading.Barrier(size)

        def warm(_: int) -> None:
            clients.get()
            barrier.wait()  # every thread of the pool is started and holds its client

        list(self.pool.map(warm, range(size)))

    def close(self) -> None:
        self.pool.shutdown()


def closed_loop(senders: Senders, items: Sequence[object], send: Callable[[object], bool]) -> Outcome:
    """Each sender sends the next item as soon as its last was answered."""
    latencies: list[float] = []
    errors = [0]

    def one(item: object) -> None:
        start = time.perf_counter()
        ok = send(item)
        latencies.append(time.perf_counter() - start)
        if not ok:
            errors[0] += 1

    start = time.perf_counter()
    list(senders.pool.map(one, items))
    return Outcome(len(items), time.perf_counter() - start, latencies, errors[0])


def _when_due(begin: float, index: int, rate: float) -> float:
    """Sleep until item ``index`` of a schedule at ``rate`` per second is due; when that was."""
    due = begin + index / rate
    delay = due - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    return due


def open_loop(senders: Senders, rate: float, items: Sequence[object], send: Callable[[object], bool]) -> Outcome:
    """Items sent on a fixed schedule (``rate`` per second) whatever the answers: latency includes queueing.

    The latency of an item counts from when it was due, so a server that falls
    behind shows it (no coordinated omission), as long as a sender is free.
    """
    latencies: list[float] = []
    errors = [0]
    begin = time.perf_counter() + 0.05

    def one(index_item: tuple[int, object]) -> None:
        index, item = index_item
        due = _when_due(begin, index, rate)
        ok = send(item)
        latencies.append(time.perf_counter() - due)
        if not ok:
            errors[0] += 1

    list(senders.pool.map(one, enumerate(items)))
    return Outcome(len(items), time.perf_counter() - begin, latencies, errors[0])


@dataclass
class Overload:
    """An open loop past capacity: what was accepted (and how long it waited), what was shed, what failed."""

    seconds: float
    accepted: list[float] = field(default_factory=list)
    shed: list[float] = field(default_factory=list)
    retry_after: set[str] = field(default_factory=set)
    errors: int = 0

    @property
    def goodput(self) -> float:
        return len(self.accepted) / self.seconds if self.seconds > 0 else 0.0


def overload(
    senders: Senders, rate: float, items: Sequence[object], send: Callable[[object], httpx.Response]
) -> Overload:
    """``open_loop``, sorting the answers: 2xx accepted, 503 shed (its ``Retry-After`` noted), anything else an
    error.  Each latency counts from when the item was due."""
    begin = time.perf_counter() + 0.05
    result = Overload(0.0)
    lock = threading.Lock()

    def one(index_item: tuple[int, object]) -> None:
        index, item = index_item
        due = _when_due(begin, index, rate)
        try:
            answer = send(item)
        except httpx.TransportError:  # a connection reset at the peak is an error the table shows, not a crash
            with lock:
                result.errors += 1
            return
        waited = time.perf_counter() - due
        with lock:
            if answer.is_success:
                result.accepted.append(waited)
            elif answer.status_code == 503:
                result.shed.append(waited)
                result.retry_after.add(answer.headers.get("retry-after", ""))
            else:
                result.errors += 1

    list(senders.pool.map(one, enumerate(items)))
    result.seconds = time.perf_counter() - begin
    return result


def burst(senders: Senders, items: Sequence[object], send: Callable[[object], bool]) -> Outcome:
    """秒杀: every sender released at once by a barrier, each sending its share of ``items``."""
    latencies: list[float] = []
    errors = [0]
    barrier = threading.Barrier(senders.size + 1)
    shares = [items[i :: senders.size] for i in range(senders.size)]

    def client(share: Sequence[object]) -> None:
        barrier.wait()
        for item in share:
            start = time.perf_counter()
            ok = send(item)
            latencies.append(time.perf_counter() - start)
            if not ok:
                errors[0] += 1

    futures = [senders.pool.submit(client, share) for share in shares]
    barrier.wait()
    start = time.perf_counter()
    for future in futures:
        future.result()
    return Outcome(len(items), time.perf_counter() - start, latencies, errors[0])


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of ``pids`` so far (those still alive)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def postgres_pids(data_dir: Path) -> list[int]:
    """The postmaster of ``data_dir`` and its backends."""
    pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    return process_tree(pid)
