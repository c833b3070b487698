"""A real deployment per store: ``zhangben sandbox`` and ``zhangben serve`` as processes on free ports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from application.apikeys import ApiKeys
from bootstrap.ledger import open_ledger
from domain.apikey import DEPLOYMENT, OPERATOR
from sandbox.keyset import DIRECT, PARTNER, V2, V2_PARTNER
from zhangben.launch import Stack, StackPlan, running_stack


@dataclass
class Deployment(Stack):
    """A running stack, with an API key for every role."""

    keys: dict[str, str] = field(default_factory=dict)

    def client(self, role: str = "merchant") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return httpx.Client(base_url=self.ledger, headers=headers, timeout=30)

    def pay(self, out_trade_no: str, **extra: Any) -> dict[str, Any]:
        answer = httpx.post(f"{self.sandbox}/sandbox/pay", json={"out_trade_no": out_trade_no} | extra, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def faults(self, **faults: Any) -> None:
        assert httpx.post(f"{self.sandbox}/sandbox/faults", json=faults, timeout=10).status_code == 200

    def wait_status(self, no: str, status: str, timeout: float = 10, role: str = "merchant") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client(role) as http:
            while True:
                view = http.get(f"/v1/orders/{no}").json()
                if view.get("status") == status or time.monotonic() > deadline:
                    assert view.get("status") == status, view
                    return view
                time.sleep(0.05)


@contextmanager
def deploy(root: Path, database_url: str, workers: int = 1, serve_args: tuple[str, ...] = ()) -> Iterator[Deployment]:
    """``zhangben sandbox`` and ``zhangben serve`` as processes on free ports, with keys for every role."""
    with running_stack(root, database_url, StackPlan(workers=workers, serve_args=serve_args)) as stack:
        # what `zhangben apikey create` does (tests/integration/test_cli.py runs the command), in this process:
        # seven processes of their own cost seconds per deployment
        wanted = {role: (DIRECT.mchid, role) for role in ("merchant", "auditor", "finance", "support")}
        wanted |= {
            "operator": (DEPLOYMENT, OPERATOR),
            "partner": (PARTNER.sub_mchid, "merchant"),
            "v2": (V2.mchid, "merchant"),
            "v2_partner": (V2_PARTNER.sub_mchid, "merchant"),
        }
        ledger = open_ledger(database_url)
        try:
            keys = {name: ApiKeys(ledger).issue_api_key(mchid, role) for name, (mchid, role) in wanted.items()}
        finally:
            ledger.close()
        yield Deployment(**vars(stack), keys=keys)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"deploy-{request.param}")
    if request.param == "postgres":
        url, workers = request.getfixturevalue("postgres").create_database("api"), 2
    else:
        url, workers = f"sqlite:///{root}/ledger.db", 1
    with deploy(root, url, workers) as deployment:
        yield deployment
