"""``zhangben demo`` as a new user runs it: the whole tour, every step held."""

from __future__ import annotations

import subprocess
import sys


def test_the_tour_holds_every_step() -> None:
    result = subprocess.run([sys.executable, "-m", "zhangben.cli", "demo"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "15 of 15 steps held" in result.stdout
    assert "paySign = MD5(" in result.stdout and "for the scanned product is PAID" in result.stdout
    assert "✗" not in result.stdout and "Traceback" not in result.stderr
