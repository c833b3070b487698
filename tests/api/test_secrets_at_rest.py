"""Secrets the ledger keeps are sealed at rest (issue 23, point 8): a ``pg_dump``, the SQLite file and its WAL
hold no webhook secret and no mini-program session key, before and after the data key is rotated."""

from __future__ import annotations

import base64
import secrets
import subprocess
from pathlib import Path

import httpx

from adapters.persistence import parse_url
from adapters.secretbox import DataKeys
from adapters.sessions import SessionKeys
from adapters.viewdb import ViewDatabase
from sandbox.keyset import DIRECT
from tests.deploy import Deployment
from zhangben.pgserver import find_bindir


def what_is_stored(deployment: Deployment) -> bytes:
    """Everything the database holds, as a backup would: ``pg_dump``, or the SQLite file with its WAL and SHM."""
    url = parse_url(deployment.database_url)
    if url.kind == "postgres":
        dump = subprocess.run(
            [str(find_bindir() / "pg_dump"), "--no-password", deployment.database_url.replace("+psycopg", "")],
            capture_output=True,
            check=True,
        )
        return dump.stdout
    base = Path(url.path)
    return b"".join(p.read_bytes() for p in (base, Path(f"{base}-wal"), Path(f"{base}-shm")) if p.exists())


def login(deployment: Deployment, http: httpx.Client, openid: str) -> str:
    session_key = base64.b64encode(secrets.token_bytes(16)).decode()
    answer = httpx.post(
        f"{deployment.sandbox}/sandbox/wx-login",
        json={"appid": DIRECT.appid, "openid": openid, "session_key": session_key},
    )
    assert http.post("/v1/wechat/miniprogram/login", json={"code": answer.json()["code"]}).status_code == 200
    return session_key


def test_no_session_key_or_webhook_secret_is_in_the_database_in_clear(deployment: Deployment) -> None:
    kept: list[str] = []
    with deployment.client() as http:
        for i in range(3):
            made = http.post("/v1/webhook-endpoints", json={"url": f"https://shop.example.com/rest{i}"})
            assert made.status_code == 201, made.text
            kept.append(made.json()["secret"])
        rotated = http.post(f"/v1/webhook-endpoints/{made.json()['id']}/rotate-secret", json={})
        assert rotated.status_code == 200, rotated.text
        kept.append(rotated.json()["secret"])  # the old one stays valid (and stored) for its grace period
        kept += [login(deployment, http, f"oRest{i}") for i in range(3)]

    def leaked() -> list[str]:
        stored = what_is_stored(deployment)
        raw = [base64.b64decode(k) for k in kept[-3:]]  # a session key's 16 bytes, should one be stored decoded
        return [s for s in kept if s.encode() in stored] + [r.hex() for r in raw if r in stored]

    assert leaked() == []
    box = DataKeys(deployment.root / "keys" / "data_key")
    db = ViewDatabase(parse_url(deployment.database_url))
    try:
        sessions = SessionKeys(db, box)
        assert [sessions.get(DIRECT.appid, f"oRest{i}") for i in range(3)] == kept[-3:]  # the ledger still reads them
        before = box.sealing_kid
        printed = deployment.cli("keys", "rotate-data-key")
        assert "now seals" in printed and box.sealing_kid != before
        sealed = [row[0] for row in db.execute("SELECT session_key FROM miniprogram_sessions")]
        sealed += [row[0] for row in db.execute("SELECT secret FROM webhook_endpoints")]
        assert sealed and all(v.startswith(f"zb1:{box.sealing_kid}:") for v in sealed)
        assert [sessions.get(DIRECT.appid, f"oRest{i}") for i in range(3)] == kept[-3:]
    finally:
        db.close()
    assert leaked() == []
    with deployment.client() as http:  # the running ledger noticed the new key by itself: endpoints still answer
        assert http.get("/v1/webhook-endpoints").status_code == 200
        assert http.post("/v1/webhook-endpoints", json={"url": "https://shop.example.com/after"}).status_code == 201
