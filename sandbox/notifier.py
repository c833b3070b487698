"""Delivers notifications the way WeChat Pay does (docs/wechatpay-protocol.md §3.5).

Signed, AES-256-GCM encrypted with the merchant's APIv3 key, retried on
WeChat's schedule until the merchant answers 2xx (the status alone counts).
The queue lives in the sandbox's database, so a restart resumes it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from adapters.wechatpay import v2_signing
from sandbox.clock import SandboxClock, rfc3339
from sandbox.config import SandboxConfig
from sandbox.notices import sealed_body, signed_headers
from sandbox.store import SandboxStore

log = logging.getLogger("zhangben.sandbox")

# The gaps between attempts: 15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h — 24h4m in all.
RETRY_GAPS = (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600)


class Notifier:
    def __init__(
        self,
        config: SandboxConfig,
        store: SandboxStore,
        clock: SandboxClock,
        certificate: Callable[[], tuple[Any, str]] | None = None,
    ) -> None:
        self.config = config
        self._certificate = certificate or (lambda: (config.platform_key, config.platform_serial))
        self.store = store
        self.clock = clock
        self.http = httpx.Client(timeout=httpx.Timeout(5.0, connect=2.0))
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="notify")
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()

    def enqueue(
        self,
        mchid: str,
        url: str,
        event_type: str,
        original_type: str,
        resource: dict[str, Any],
        keys: dict[str, str],
        faults: dict[str, Any],
    ) -> None:
        """Encrypt once (the body is the same on every retry) and queue the first attempt."""
        apiv3_key = self.config.merchants[mchid].apiv3_key
        notification_id, body = sealed_body(apiv3_key, event_type, original_type, resource, rfc3339(self.clock.now()))
        self._queue(notification_id, url, event_type, body, keys, faults, "v3")

    def enqueue_v2(self, url: str, event_type: str, body: bytes, keys: dict[str, str], faults: dict[str, Any]) -> None:
        """An API v2 notification: XML, signed (pay) or with ``req_info`` (refund); the same schedule and faults."""
        self._queue(str(uuid.uuid4()), url, event_type, body.decode("utf-8"), keys, faults, "v2")

    def _queue(
        self,
        notification_id: str,
        url: str,
        event_type: str,
        body: str,
        keys: dict[str, str],
        faults: dict[str, Any],
        wire: str,
    ) -> None:
        record = {
            "id": notification_id,
            "wire": wire,
            "url": url,
            "event_type": event_type,
            "body": body,
            "keys": keys,
            "attempt": 0,
            "next_at": time.time() + float(faults.get("notification_delay_seconds", 0)),
            "time_factor": float(faults.get("time_factor", 1)) or 1.0,
            "mode": faults.get("notifications", "deliver"),
            "copies": int(faults.get("duplicate_count", 2)) if faults.get("notifications") == "duplicate" else 1,
            "probe": bool(faults.get("signtest_probe", False)) and wire == "v3",
            "done": False,
        }
        self.store.put("notification", notification_id, record)

    def headers(self, body: bytes, probe: bool = False) -> dict[str, str]:
        """The five ``Wechatpay-*`` headers, signed with the key the sandbox's mode names."""
        if self.config.mode == "certificate":
            key, serial = self._certificate()
        else:
            key, serial = self.config.public_key_private, self.config.public_key_id
        return signed_headers(key, serial, body, probe)

    # -- the delivery loop ----------------------------------------------------------

    def due(self) -> list[dict[str, Any]]:
        now = time.time()
        return [n for n in self.store.all("notification") if not n["done"] and n["next_at"] <= now]

    def tick(self) -> None:
        for record in self.due():
            with self._lock:
                if record["id"] in self._in_flight:
                    continue
                self._in_flight.add(record["id"])
            self.pool.submit(self._attempt, record)

    def _attempt(self, record: dict[str, Any]) -> None:
        try:
            self._deliver(record)
        except Exception:  # a delivery bug must not stop the loop
            log.exception("notification %s: delivery failed", record["id"])
        finally:
            with self._lock:
                self._in_flight.discard(record["id"])

    def _deliver(self, record: dict[str, Any]) -> None:
        attempt = record["attempt"] + 1
        body = record["body"].encode()
        if record["mode"] == "drop":
            self._log(record, attempt, None, dropped=True)
            self._finish(record, attempt, delivered=False, give_up=True)
            return
        if record["probe"] and attempt == 1:
            self._log(record, attempt, self._post(record["url"], body, probe=True)[0], probe=True)
        wire = record.get("wire", "v3")
        copies = record["copies"] if attempt == 1 else 1
        answers = (
            list(self.pool.map(lambda _: self._post(record["url"], body, wire=wire), range(copies)))
            if copies > 1
            else [self._post(record["url"], body, wire=wire)]
        )
        for status, _ in answers:
            self._log(record, attempt, status)
        delivered = any(ok for _, ok in answers)
        self._finish(record, attempt, delivered, give_up=attempt > len(RETRY_GAPS))

    def _post(self, url: str, body: bytes, probe: bool = False, wire: str = "v3") -> tuple[int | None, bool]:
        """(HTTP status, acknowledged): v3 by a 2xx status alone; v2 by ``return_code=SUCCESS`` in the answer."""
        headers = (
            {"Content-Type": "text/xml", "User-Agent": "Mozilla/4.0 (zhangben sandbox notifier)"}
            if wire == "v2"
            else self.headers(body, probe)
        )
        try:
            response = self.http.post(url, content=body, headers=headers)
        except httpx.HTTPError:
            return None, False
        if wire == "v2":
            return response.status_code, response.status_code == 200 and _v2_success(response.content)
        return response.status_code, 200 <= response.status_code < 300

    def _finish(self, record: dict[str, Any], attempt: int, delivered: bool, give_up: bool) -> None:
        with self.store.transaction():
            current = self.store.get("notification", record["id"]) or record
            current["attempt"] = attempt
            if delivered or give_up:
                current["done"] = True
            else:
                current["next_at"] = time.time() + RETRY_GAPS[attempt - 1] / current["time_factor"]
            self.store.put("notification", record["id"], current)

    def _log(self, record: dict[str, Any], attempt: int, status: int | None, **flags: bool) -> None:
        entry = {
            "notification_id": record["id"],
            "event_type": record["event_type"],
            **record["keys"],
            "attempt": attempt,
            "time": rfc3339(self.clock.now()),
            "status": status,
            **flags,
        }
        self.store.log_delivery(entry)
        log.info(
            "notify %s %s attempt %d -> %s%s",
            record["event_type"],
            record["keys"],
            attempt,
            status,
            " (probe)" if flags.get("probe") else " (dropped)" if flags.get("dropped") else "",
        )

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()


def _v2_success(answer: bytes) -> bool:
    """WeChat reads the answer's ``return_code``; anything but SUCCESS is a failure it retries."""
    try:
        return v2_signing.parse_xml(answer).get("return_code") == "SUCCESS"
    except v2_signing.MalformedXml:
        return False
