"""A provider with 5,000 sub-merchants starts as fast as one with 5 (issue 28).

``python -m bench.sub_merchants``: for each count, a fresh PostgreSQL database (the throwaway server ``make test``
uses) and a dev keyset with its ``[[providers]]``; the sub-merchants' records are written straight into the
directory (as ``POST /v1/sub-merchants`` saves them, 500 per transaction); then a process's start-up —
``build_runtimes``, which reads every record into the merchant book — is timed five times, and one follow of the
records alone.  ``make bench`` runs it too.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from application.submerchants import DEFAULTS
from bootstrap.ledger import open_directory
from bootstrap.settings import load_settings
from bootstrap.wiring import build_runtimes, init_database
from domain.submerchant import SubMerchant
from sandbox.keyset import PARTNER, init_keyset
from zhangben.pgserver import ThrowawayPostgres

COUNTS = (5, 5_000)
ROUNDS = 5


def _seed(database_url: str, count: int) -> None:
    directory = open_directory(database_url)
    try:
        now = directory.clock()
        records = [
            SubMerchant(
                provider=PARTNER.mchid,
                sub_mchid=f"1{n:09d}",
                settings={**DEFAULTS, "name": f"shop {n}", "apps": [{"appid": f"wx{n:016x}", "channels": ["jsapi"]}]},
                by="bench",
                at=now,
            )
            for n in range(count)
        ]
        for start in range(0, count, 500):
            directory.save(*records[start : start + 500])
    finally:
        directory.close()


def _start_up(env: dict[str, str]) -> tuple[float, int]:
    """One process's start-up, in ms, and how many merchants its book holds."""
    settings = load_settings(env)
    started = time.perf_counter()
    fleet = build_runtimes(settings)
    elapsed = (time.perf_counter() - started) * 1000
    held = len(fleet.home.service.merchants)
    fleet.close()
    return elapsed, held


def measure(server: ThrowawayPostgres) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = root / "zhangben.toml"
        init_keyset(root / "keys", config, "http://127.0.0.1:1", "http://127.0.0.1:2")
        for count in COUNTS:
            url = server.create_database(f"subs{count}")
            env = {"ZHANGBEN_CONFIG": str(config), "ZHANGBEN_DATABASE_URL": url}
            init_database(load_settings(env))
            _seed(url, count)
            rounds = [_start_up(env) for _ in range(ROUNDS)]
            median = statistics.median(ms for ms, _ in rounds)
            held = rounds[0][1]
            results[str(count)] = {"start_up_ms": round(median, 1), "merchants_in_book": held}
            print(f"  {count:>5} sub-merchants: start-up (build_runtimes) p50 {median:.0f} ms, {held} merchants served")
    small, large = results[str(COUNTS[0])]["start_up_ms"], results[str(COUNTS[-1])]["start_up_ms"]
    results["ratio"] = round(large / small, 2)
    print(f"  5,000 / 5: {results['ratio']:.2f}× the start-up time")
    return results


def main() -> int:
    server = ThrowawayPostgres()
    server.start()
    try:
        measure(server)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
