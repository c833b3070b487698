"""Two cells of three Patroni nodes, a deployment of eight partitions over them, and a storm to fail them under.

The test merchants are hashed onto partitions 7 (DIRECT), 6 (PARTNER's
sub-merchant), 2 (V2) and 0 (V2_PARTNER's) — tests/unit/test_partition_ids.py
pins them — and partition *p* lives on cell *p* mod 2: DIRECT's money is on
cell ``b``, V2's on cell ``a`` (with the directory).  The storm creates orders
and sends each one's signed payment callback, as WeChat would, retrying
until it is acknowledged; every 201 and every acknowledged callback is
written down, with when each answer came.
"""

from __future__ import annotations

import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bootstrap.partitioning import merchant_ledger
from bootstrap.settings import load_settings
from domain.errors import OrderNotFound
from sandbox.keyset import DIRECT, PUBLIC_KEY_ID, V2
from tests.deploy import PARTITIONS, Deployment, deploy
from tests.spec_v2 import SpecV2Wechat, parse, read_key
from tests.spec_wechat import SpecWechat, paid_resource
from tests.views import current, equal_to_a_rebuild, wait_for
from zhangben.cluster import DevCluster

CELL_OF = {"merchant": "b", "v2": "a"}
GIVE_UP_SECONDS = 30.0  # a callback still refused this long after the storm stopped is written down, not retried  # the role's merchant → the cell its partition is on


@contextmanager
def cluster() -> Iterator[DevCluster]:
    """Under a folder of its own in the system's temporary one (pytest's is closed to the ``postgres`` user)."""
    made = DevCluster.create(Path(tempfile.mkdtemp(prefix="zhangben-cells-")), cells=2)
    try:
        made.start()
        yield made
    finally:
        made.stop()


def config(c: DevCluster) -> str:
    """What a user pastes after `zhangben dev cluster up`: its `[[cells]]` tables, URLs in files."""
    c.save()
    return f"[partitioning]\npartitions = {PARTITIONS}\n\n" + "\n".join(c.config_lines())


@contextmanager
def deployed(c: DevCluster, root: Path) -> Iterator[Deployment]:
    """``serve --workers 2 --api-only`` and two ``zhangben work`` processes over the two cells."""
    with deploy(root, c.cell("a").url(), workers=2, work=2, config_extra=config(c)) as d:
        d.faults(notifications="drop")  # the storm sends the callbacks itself, and reads each answer
        yield d


@dataclass
class Answer:
    role: str
    what: str  # "create" | "callback"
    status: int
    at: float  # when it came
    sent: float  # when it was asked
    problem: bool  # a refusal came as problem+json (creates) or as the FAIL WeChat retries (callbacks)
    detail: str = ""  # a refusal's own words


@dataclass
class Storm:
    """Creates and callbacks for each role in threads, every answer kept; ``stop()`` ends it."""

    d: Deployment
    answers: list[Answer] = field(default_factory=list)
    created: dict[str, set[str]] = field(default_factory=dict)  # role → orders answered 201
    paid: dict[str, set[str]] = field(default_factory=dict)  # role → orders whose callback was acknowledged
    errors: list[str] = field(default_factory=list)
    unacknowledged: list[str] = field(default_factory=list)  # callbacks never acknowledged (given up after stop)
    _stopped_at: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, per_role: int = 2) -> None:
        for role in CELL_OF:
            self.created[role], self.paid[role] = set(), set()
            for n in range(per_role):
                thread = threading.Thread(target=self._run, args=(role, f"{role[:2].upper()}{n}"), daemon=True)
                thread.start()
                self._threads.append(thread)

    def stop(self) -> None:
        self._stopped_at = time.monotonic()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=GIVE_UP_SECONDS + 60)
        assert not any(t.is_alive() for t in self._threads), "a storm thread hangs"

    def on(self, cell: str, since: float = 0.0) -> list[Answer]:
        """The answers for ``cell``'s merchants to what was asked after ``since``."""
        with self._lock:
            return [a for a in self.answers if CELL_OF[a.role] == cell and a.sent >= since]

    def _keep(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def _run(self, role: str, tag: str) -> None:
        send = self._v2_callback if role == "v2" else self._v3_callback
        with self.d.client(role) as http:
            i = 0
            while not self._stop.is_set():
                no = f"CELL-{tag}-{i}-{secrets.token_hex(3)}"
                i += 1
                try:
                    otn = self._create(http, role, no)
                    if otn is not None and self._acknowledged(send, role, otn):
                        self.paid[role].add(no)
                except httpx.HTTPError as exc:  # a hung or refused connection is a failure of the test's subject
                    self.errors.append(f"{role} {no}: {type(exc).__name__}: {exc}")
                    time.sleep(0.2)

    def _acknowledged(self, send: Callable[[str, str], bool], role: str, otn: str) -> bool:
        """WeChat retries until it is acknowledged; once the storm is stopped, for ``GIVE_UP_SECONDS`` more."""
        while not send(role, otn):
            if self._stop.is_set() and time.monotonic() - self._stopped_at > GIVE_UP_SECONDS:
                self.unacknowledged.append(otn)
                return False
            time.sleep(0.2)
        return True

    def _create(self, http: httpx.Client, role: str, no: str) -> str | None:
        body = {"merchant_order_no": no, "amount_fen": 100, "description": "风暴", "channel": "native"}
        sent = time.monotonic()
        answer = http.post("/v1/orders", json=body, timeout=30)
        problem = answer.headers.get("content-type", "").startswith("application/problem+json")
        detail = answer.text[:160] if answer.status_code >= 300 else ""
        self._keep(Answer(role, "create", answer.status_code, time.monotonic(), sent, problem, detail))
        if answer.status_code != 201:
            time.sleep(0.1)
            return None
        self.created[role].add(no)
        return str(answer.json()["payment"]["out_trade_no"])

    def _v3_callback(self, role: str, otn: str) -> bool:
        wechat = SpecWechat.from_keyset(self.d.root / "keys", DIRECT.mchid, PUBLIC_KEY_ID)
        txn = f"42{secrets.randbelow(10**26):026d}"
        body = wechat.body("TRANSACTION.SUCCESS", paid_resource(DIRECT.mchid, DIRECT.appid, otn, 100, txn))
        sent = time.monotonic()
        answer = httpx.post(
            f"{self.d.ledger}/wechatpay/v3/notify", content=body, headers=wechat.headers(body), timeout=30
        )
        ok = answer.status_code in (200, 204)
        said = (
            ok
            or answer.headers.get("content-type", "").startswith("application/json")
            and answer.json().get("code") == "FAIL"
        )
        self._keep(Answer(role, "callback", answer.status_code, time.monotonic(), sent, said))
        return ok

    def _v2_callback(self, role: str, otn: str) -> bool:
        wechat = SpecV2Wechat(V2.mchid, V2.appid, read_key(self.d.root / "keys", V2.mchid), V2.v2_sign_type)
        body = wechat.signed(wechat.pay_notification(otn, 100))
        sent = time.monotonic()
        answer = httpx.post(f"{self.d.ledger}/wechatpay/v2/notify", content=body, timeout=30)
        code = parse(answer.content).get("return_code") if answer.content.startswith(b"<") else None
        ok = answer.status_code == 200 and code == "SUCCESS"
        # v2 says FAIL in XML, over HTTP 200 or 503: WeChat retries it either way (kept as a 503 here)
        status = 200 if ok else 503 if code == "FAIL" else answer.status_code
        detail = "" if ok else answer.text[:160]
        self._keep(Answer(role, "callback", status, time.monotonic(), sent, ok or code == "FAIL", detail))
        return ok


def longest_gap(answers: list[Answer], start: float, end: float) -> float:
    """The longest time without a 2xx answer between ``start`` and ``end``."""
    times = [start, *sorted(a.at for a in answers if a.status < 300 and start <= a.at <= end), end]
    return max(b - a for a, b in zip(times, times[1:], strict=False))


MCHID_OF = {"merchant": DIRECT.mchid, "v2": V2.mchid}


def lost(d: Deployment, storm: Storm) -> list[str]:
    """What was acknowledged and is not in its merchant's event log: each 201 whose order is not there, each
    acknowledged callback whose order is not paid there (read from the log itself: no projection needed)."""
    missing = []
    for role, mchid in MCHID_OF.items():
        with merchant_ledger(load_settings(d.env), mchid) as ledger:
            for no in sorted(storm.created[role]):
                try:
                    order = ledger.get_order(mchid, no)
                except OrderNotFound:
                    missing.append(f"{role} order {no} answered 201 and is lost")
                    continue
                if no in storm.paid[role] and not order.is_paid:
                    missing.append(f"{role} order {no}'s callback was acknowledged and it is not paid")
    return missing


def check_nothing_lost(d: Deployment, storm: Storm) -> None:
    """Every 201 is an order, every acknowledged callback a paid one (in the log, then through the API); every
    view equals a rebuild of its log."""
    assert lost(d, storm) == []
    wait_for(lambda: current(d), 60, "every partition's projections to catch up")
    for role in CELL_OF:
        with d.client(role) as http:
            for no in storm.created[role]:
                found = http.get(f"/v1/orders/{no}")
                assert found.status_code == 200, f"{role} order {no} answered 201 and is lost: {found.text}"
                if no in storm.paid[role]:
                    assert found.json()["status"] == "PAID", f"{role} {no}'s callback was acknowledged: {found.text}"
    equal_to_a_rebuild(d)
