"""Reconcile a generated bill of N lines in a fresh process: import + match + heal, as ``zhangben reconcile --bill``.

``python -m bench.bill_import URL LINES known|unknown`` prints one JSON line:
seconds, peak RSS, the differences found, and the baseline — a minimal
importer that only splits the lines and ``COPY``s them into a bare table.
With ``known`` the journal already holds every payment of the bill (a clean
day); with ``unknown`` the ledger has never heard of any of them (a day of
strangers: reported, not queried one by one).
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import psycopg

from adapters.persistence import connect, parse_url
from bootstrap.settings import load_settings
from bootstrap.wiring import build_runtime, init_database
from sandbox.bills import HEADER, SUMMARY_HEADER
from sandbox.keyset import DIRECT, init_keyset

DAY = date(2026, 11, 22)


def write_bill(path: Path, lines: int) -> None:
    """A bill of ``lines`` payments of 10.00 yuan, written streaming."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER + "\r\n")
        for i in range(lines):
            out.write(
                f"`2026-11-22 10:00:00,`wxd678efh567hg6787,`{DIRECT.mchid},`0,`,`42{i:026d},`zb{i:026d},`oPayer,"
                f"`NATIVE,`SUCCESS,`OTHERS,`CNY,`10.00,`0.00,`0,`0,`0.00,`0.00,`,`,`goods,`,`0.06000,`0.60%,"
                f"`10.00,`0.00,`\r\n"
            )
        out.write(SUMMARY_HEADER + "\r\n")
        out.write(f"`{lines},`{lines * 10}.00,`0.00,`0.00,`{lines * 6 / 100:.5f},`{lines * 10}.00,`0.00\r\n")


def seed_journal(url: str, lines: int) -> None:
    """The journal's money rows for every payment of the bill, as if the ledger had recorded them all."""
    with connect(parse_url(url), 10) as conn, conn.cursor() as cursor:  # partition 0's view tables
        columns = "kind, key, mchid, day, out_trade_no, amount_fen, event_ref"
        with cursor.copy(f"COPY ledger_money ({columns}) FROM STDIN") as copy:
            for i in range(lines):
                copy.write_row(("payment", f"42{i:026d}", DIRECT.mchid, DAY.isoformat(), f"zb{i:026d}", 1000, i + 1))


def minimal_copy(url: str, bill: Path) -> float:
    """Baseline: split each line and COPY its fields into a bare table (no parsing, no index, no matching)."""
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE TABLE raw_bill ({', '.join(f'c{i} text' for i in range(26))})")
        start = time.perf_counter()
        with bill.open(encoding="utf-8") as handle, cursor.copy("COPY raw_bill FROM STDIN") as copy:
            next(handle)
            for line in handle:
                if line.startswith(SUMMARY_HEADER[:6]):
                    break
                copy.write_row(line.rstrip("\r\n").split(",")[:26])
        conn.commit()
        return time.perf_counter() - start


def peak_rss_mib() -> float:
    """This process's peak resident memory since it started: ``VmHWM``.

    Not ``ru_maxrss``: a child started by fork carries its parent's high-water
    mark over the exec, so a big benchmark process would show as the importer's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    url, lines, which = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bill = root / "bill.csv"
        write_bill(bill, lines)
        init_keyset(root / "keys", root / "zhangben.toml", "http://127.0.0.1:9", "http://127.0.0.1:9")
        settings = load_settings({"ZHANGBEN_CONFIG": str(root / "zhangben.toml"), "ZHANGBEN_DATABASE_URL": url})
        init_database(settings)
        if which == "known":
            seed_journal(url, lines)
        rt = build_runtime(settings)
        rss_before = peak_rss_mib()
        start = time.perf_counter()
        report = rt.finance.import_bill(DIRECT.mchid, DAY, bill)
        elapsed = time.perf_counter() - start
        peak = peak_rss_mib()  # the import's peak (the process's, so far)
        rt.close()
        baseline = minimal_copy(url, bill)
    print(
        json.dumps(
            {
                "lines": report["imported"]["lines"],
                "seconds": round(elapsed, 2),
                "copy_seconds": round(baseline, 2),
                "peak_rss_mib": peak,
                "rss_before_mib": rss_before,
                "matched": report["matched"],
                "differences": report["differences_total"],
                "queried": len(report["healed"]) + report["not_queried"],
            }
        )
    )


if __name__ == "__main__":
    main()
