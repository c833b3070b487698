"""A deployment to drive from outside: ``zhangben sandbox`` and ``zhangben serve`` as processes on free ports
(``launch.running_stack``), with an API key for every role.  The tests' deployments (``tests/deploy.py``) and
``make bench`` run on it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from application.apikeys import ApiKeys
from bootstrap.ledger import open_directory
from domain.apikey import DEPLOYMENT, OPERATOR
from sandbox.keyset import DIRECT, PARTNER, V2, V2_PARTNER
from zhangben.launch import Stack, StackError, StackPlan, running_stack


@dataclass
class Deployment(Stack):
    """A running stack, with an API key for every role."""

    keys: dict[str, str] = field(default_factory=dict)

    def client(self, role: str = "merchant") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return httpx.Client(base_url=self.ledger, headers=headers, timeout=30)

    def pay(self, out_trade_no: str, **extra: Any) -> dict[str, Any]:
        answer = httpx.post(f"{self.sandbox}/sandbox/pay", json={"out_trade_no": out_trade_no} | extra, timeout=10)
        if answer.status_code != 200:
            raise StackError(f"the sandbox did not pay {out_trade_no}: {answer.text}")
        return dict(answer.json())

    def faults(self, **faults: Any) -> None:
        answer = httpx.post(f"{self.sandbox}/sandbox/faults", json=faults, timeout=10)
        if answer.status_code != 200:
            raise StackError(f"the sandbox refused the faults {faults}: {answer.text}")

    def wait_status(self, no: str, status: str, timeout: float = 10, role: str = "merchant") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client(role) as http:
            while True:
                view = http.get(f"/v1/orders/{no}").json()
                if view.get("status") == status:
                    return dict(view)
                if time.monotonic() > deadline:
                    raise StackError(f"order {no} is {view.get('status')}, not {status}, after {timeout}s: {view}")
                time.sleep(0.05)


@contextmanager
def deploy(
    root: Path,
    database_url: str,
    workers: int = 1,
    serve_args: tuple[str, ...] = (),
    config_extra: str = "",
    work: int = 0,
) -> Iterator[Deployment]:
    """``zhangben sandbox`` and ``zhangben serve`` as processes on free ports, with keys for every role
    (``work``: ``serve --api-only`` with that many ``zhangben work`` processes beside it, production's shape)."""
    plan = StackPlan(workers=workers, serve_args=serve_args, config_extra=config_extra, work=work)
    with running_stack(root, database_url, plan) as stack:
        # what `zhangben apikey create` does (tests/integration/test_cli.py runs the command), in this process:
        # seven processes of their own cost seconds per deployment
        wanted = {role: (DIRECT.mchid, role) for role in ("merchant", "auditor", "finance", "support")}
        wanted |= {
            "operator": (DEPLOYMENT, OPERATOR),
            "partner": (PARTNER.sub_mchid, "merchant"),
            "provider": (PARTNER.mchid, "provider"),
            "v2": (V2.mchid, "merchant"),
            "v2_partner": (V2_PARTNER.sub_mchid, "merchant"),
        }
        ledger = open_directory(database_url)
        try:
            keys = {name: ApiKeys(ledger).issue_api_key(mchid, role) for name, (mchid, role) in wanted.items()}
        finally:
            ledger.close()
        yield Deployment(**vars(stack), keys=keys)
