"""SQLite on a full or read-only disk: one clear line from the CLI, nothing half-written, fine once space is back.

The disk is a small tmpfs mounted for the test (root can write to any file
whatever its mode, so only a real full or read-only file system shows it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.keyset import DIRECT
from zhangben.launch import running_stack


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mountpoint)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"a small file system cannot be mounted here ({mounted.stderr.strip()}): needs root in a container")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def fill(filler: Path) -> None:
    """Fill the disk to the last byte."""
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    for size in (65536, 1):
        try:
            while True:
                os.write(fd, b"\0" * size)
        except OSError:
            pass
    os.close(fd)


def zhangben(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zhangben.cli", *args], env={**os.environ, **env}, capture_output=True, text=True
    )


@pytest.mark.ha  # a disk filled and made read-only under the CLI: `make test-ha`
def test_a_full_then_read_only_disk_is_one_line_and_nothing_half_written(keyset: Path, small_disk: Path) -> None:
    env = {"ZHANGBEN_CONFIG": str(keyset / "zhangben.toml"), "ZHANGBEN_DATABASE_URL": f"sqlite:///{small_disk}/l.db"}
    assert zhangben("db", "init", env=env).returncode == 0
    assert zhangben("apikey", "create", "--merchant", DIRECT.mchid, "--role", "merchant", env=env).returncode == 0
    filler = small_disk / "filler"
    fill(filler)

    full = zhangben("apikey", "create", "--merchant", DIRECT.mchid, "--role", "merchant", env=env)
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
    assert full.stderr.count("\n") == 1 and full.stderr.startswith("zhangben: error:") and "database" in full.stderr

    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        read_only = zhangben("apikey", "create", "--merchant", DIRECT.mchid, "--role", "merchant", env=env)
        assert read_only.returncode == 1 and "Traceback" not in read_only.stderr, read_only.stderr
        assert read_only.stderr.count("\n") == 1 and read_only.stderr.startswith("zhangben: error:")
        assert "database" in read_only.stderr
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)

    again = zhangben("apikey", "create", "--merchant", DIRECT.mchid, "--role", "merchant", env=env)
    assert again.returncode == 0, again.stderr
    listed = zhangben("apikey", "list", env=env)
    keys = [line for line in listed.stdout.splitlines() if re.match(r"[0-9a-f]{16} ", line)]
    assert listed.returncode == 0 and len(keys) == 2  # the two keys written before the disk filled


@pytest.mark.ha  # a full disk under `serve`, then space freed: `make test-ha`
def test_serve_notices_by_itself_that_space_is_back(small_disk: Path, tmp_path: Path) -> None:
    """Issue 23, point 9: a full disk is a 503; once space is freed the next creates go through, no restart."""
    with running_stack(tmp_path / "stack", f"sqlite:///{small_disk}/l.db") as stack:
        key = stack.cli("apikey", "create", "--merchant", DIRECT.mchid, "--role", "merchant")
        with httpx.Client(base_url=stack.ledger, headers={"Authorization": f"Bearer {key}"}, timeout=20) as http:

            def create(no: str) -> int:
                body = {"merchant_order_no": no, "amount_fen": 100, "description": "茶", "channel": "native"}
                return http.post("/v1/orders", json=body).status_code

            assert create("DISK-0") == 201
            filler = small_disk / "filler"
            fill(filler)
            assert {create(f"DISK-F{i}") for i in range(3)} == {503}
            filler.unlink()
            deadline = time.monotonic() + 10
            while (status := create(f"DISK-{time.monotonic_ns()}")) != 201:
                assert status == 503 and time.monotonic() < deadline, "still refused with space free again"
                time.sleep(0.2)
            assert http.get("/v1/orders/DISK-0").status_code == 200
