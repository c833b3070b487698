"""Import a generated bill of N lines in a fresh process; print seconds and peak RSS (for ``make bench``)."""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from adapters.persistence import parse_url
from adapters.viewdb import ViewDatabase
from projections.reconciliation import Reconciliation
from sandbox.bills import HEADER, SUMMARY_HEADER


def write_bill(path: Path, lines: int) -> None:
    """A bill of ``lines`` payments of 10.00 yuan, written streaming."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER + "\r\n")
        for i in range(lines):
            out.write(
                f"`2026-11-22 10:00:00,`wxd678efh567hg6787,`1900000001,`0,`,`42{i:026d},`zb{i:026d},`oPayer,"
                f"`NATIVE,`SUCCESS,`OTHERS,`CNY,`10.00,`0.00,`0,`0,`0.00,`0.00,`,`,`goods,`,`0.06000,`0.60%,"
                f"`10.00,`0.00,`\r\n"
            )
        out.write(SUMMARY_HEADER + "\r\n")
        out.write(f"`{lines},`{lines * 10}.00,`0.00,`0.00,`{lines * 6 / 100:.5f},`{lines * 10}.00,`0.00\r\n")


def main() -> None:
    url, lines = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        bill = Path(tmp) / "bill.csv"
        write_bill(bill, lines)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        db = ViewDatabase(parse_url(url))
        reconciliation = Reconciliation(db)
        reconciliation.create_tables()
        start = time.perf_counter()
        with bill.open(encoding="utf-8", newline="") as handle:
            result = reconciliation.store_bill("1900000001", date(2026, 11, 22), handle)
        elapsed = time.perf_counter() - start
        db.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "lines": result.lines,
                "seconds": round(elapsed, 2),
                "peak_rss_mib": round(peak / 1024, 1),
                "rss_before_mib": round(rss_before / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
