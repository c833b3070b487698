"""Mini-program session keys, kept server-side in the view database (never returned, never logged).

``jscode2session`` hands the ledger a ``session_key`` per payer: WeChat's key
for decrypting what the mini-program sends later (wx.getPhoneNumber and the
like) and for checking its signatures.  Kept in the database, every worker sees
the latest one and a restart keeps them; a newer login replaces the key.
https://developers.weixin.qq.com/miniprogram/dev/framework/open-ability/login.html
"""

from __future__ import annotations

from datetime import datetime

from adapters.viewdb import ViewDatabase, sortable

DDL = [
    "CREATE TABLE IF NOT EXISTS miniprogram_sessions (appid TEXT NOT NULL, openid TEXT NOT NULL, "
    "session_key TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (appid, openid))",
]


class SessionKeys:
    def __init__(self, db: ViewDatabase) -> None:
        self.db = db

    def create_tables(self) -> None:
        for statement in DDL:
            self.db.execute(statement)

    def keep(self, appid: str, openid: str, session_key: str, now: datetime) -> None:
        self.db.execute(
            "INSERT INTO miniprogram_sessions (appid, openid, session_key, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (appid, openid) DO UPDATE SET session_key = excluded.session_key, "
            "updated_at = excluded.updated_at",
            (appid, openid, session_key, sortable(now)),
        )

    def get(self, appid: str, openid: str) -> str | None:
        rows = self.db.execute(
            "SELECT session_key FROM miniprogram_sessions WHERE appid = ? AND openid = ?", (appid, openid)
        )
        return str(rows[0][0]) if rows else None
