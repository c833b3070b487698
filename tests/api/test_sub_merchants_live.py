"""Two ``serve`` processes on one PostgreSQL: a sub-merchant added with ``zhangben merchants add`` is served by
both without a restart, and ``deactivate`` refuses its new orders in both within seconds (issue 28)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.keyset import PARTNER
from tests.deploy import Deployment, run_cli
from zhangben.launch import free_port

SUB = "1900000777"
SUB_APPID = "wx00000000000007a7"


@pytest.fixture(scope="module")
def two_processes(shared_postgres: Deployment) -> Iterator[tuple[Deployment, str]]:
    """The session's PostgreSQL deployment (``serve --workers 2``) and a second ``serve`` process beside it, on the
    same database and config (its own sub-merchant id: nothing the other modules count)."""
    deployment, root, port = shared_postgres, shared_postgres.root, free_port()
    log = (root / "second-serve.log").open("wb")
    second = subprocess.Popen(
        [sys.executable, "-m", "zhangben.cli", "serve", "--port", str(port), "--workers", "1", "--api-only"],
        env=deployment.env,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert second.poll() is None and time.monotonic() < deadline, (root / "second-serve.log").read_text()
            time.sleep(0.2)
        yield deployment, url
    finally:
        second.terminate()
        second.wait(20)
        log.close()


def order(no: str) -> dict[str, Any]:
    return {"merchant_order_no": no, "amount_fen": 300, "description": "茶", "channel": "native"}


def statuses(urls: list[str], key: str, no: str) -> list[int]:
    return [
        httpx.post(f"{u}/v1/orders", json=order(f"{no}-{i}"), headers={"Authorization": f"Bearer {key}"}).status_code
        for i, u in enumerate(urls)
    ]


def test_both_processes_serve_a_sub_merchant_added_while_they_run(two_processes: tuple[Deployment, str]) -> None:
    deployment, second = two_processes
    httpx.post(
        f"{deployment.sandbox}/sandbox/sub-merchants",
        json={"sp_mchid": PARTNER.mchid, "sub_mchid": SUB, "sub_appids": [SUB_APPID]},
    ).raise_for_status()
    added = run_cli(deployment, "merchants", "add", SUB, "--name", "两店之一", "--app", f"{SUB_APPID}:jsapi")
    key = added.splitlines()[-1].split()[-1]
    assert key.startswith("zb_") and "两店之一" in added
    urls = [deployment.ledger, second]
    # the first request each process gets for it already finds it (a miss reads the records at once)
    assert statuses(urls, key, "LIVE-A") == [201, 201]
    listed = run_cli(deployment, "merchants", "list")
    assert SUB in listed and "sub-merchant" in listed and "active" in listed
    run_cli(deployment, "merchants", "deactivate", SUB)
    started = time.monotonic()
    while statuses(urls, key, f"LIVE-B{int(time.monotonic() * 1000)}") != [403, 403]:
        assert time.monotonic() - started < 10, "a deactivation not seen by both processes within 10 s"
        time.sleep(0.2)
    run_cli(deployment, "merchants", "set", SUB, "--active", "yes", "--order-ttl-minutes", "20")
    started = time.monotonic()
    while statuses(urls, key, f"LIVE-C{int(time.monotonic() * 1000)}") != [201, 201]:
        assert time.monotonic() - started < 10, "a reactivation not seen by both processes within 10 s"
        time.sleep(0.2)
    with deployment.client("provider") as provider:
        history = provider.get(f"/v1/sub-merchants/{SUB}").json()["history"]
    assert [h["changes"] for h in history[1:]] == [{"active": False}, {"active": True, "order_ttl_minutes": 20}]
    assert all(h["by"].startswith("cli ") for h in history)
