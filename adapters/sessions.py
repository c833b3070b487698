"""Mini-program session keys, kept server-side in the view database (never returned, never logged).

``jscode2session`` hands the ledger a ``session_key`` per payer: WeChat's key
for decrypting what the mini-program sends later (wx.getPhoneNumber and the
like) and for checking its signatures.  Kept in the database, every worker sees
the latest one and a restart keeps them; a newer login replaces the key.
Each is sealed under the data key (``adapters.secretbox``): the database holds
none in clear.
https://developers.weixin.qq.com/miniprogram/dev/framework/open-ability/login.html
"""

from __future__ import annotations

from datetime import datetime

from adapters.secretbox import DataKeys, NoDataKey, is_sealed
from adapters.viewdb import ViewDatabase, sortable

DDL = [
    "CREATE TABLE IF NOT EXISTS miniprogram_sessions (appid TEXT NOT NULL, openid TEXT NOT NULL, "
    "session_key TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (appid, openid))",
]


def _context(appid: str, openid: str) -> str:
    return f"miniprogram_sessions/{appid}/{openid}"


class SessionKeys:
    def __init__(self, db: ViewDatabase, box: DataKeys | None = None) -> None:
        self.db = db
        self.box = box

    def create_tables(self) -> None:
        for statement in DDL:
            self.db.execute(statement)

    def keep(self, appid: str, openid: str, session_key: str, now: datetime) -> None:
        if self.box is None:
            raise NoDataKey("a mini-program login (its session_key)")
        sealed = self.box.seal(session_key, _context(appid, openid))
        self.db.execute(
            "INSERT INTO miniprogram_sessions (appid, openid, session_key, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (appid, openid) DO UPDATE SET session_key = excluded.session_key, "
            "updated_at = excluded.updated_at",
            (appid, openid, sealed, sortable(now)),
        )

    def get(self, appid: str, openid: str) -> str | None:
        rows = self.db.execute(
            "SELECT session_key FROM miniprogram_sessions WHERE appid = ? AND openid = ?", (appid, openid)
        )
        if not rows:
            return None
        value = str(rows[0][0])
        if self.box is None:
            if is_sealed(value):
                raise NoDataKey("reading a mini-program session key")
            return value
        return self.box.open(value, _context(appid, openid))

    def reseal(self) -> int:
        """Seal every key kept in clear (from before sealing) or under an older data key; how many."""
        if self.box is None:
            return 0
        changed = 0
        for appid, openid, value in self.db.execute("SELECT appid, openid, session_key FROM miniprogram_sessions"):
            if self.box.needs_reseal(value):
                plain = self.box.open(value, _context(appid, openid))
                self.db.execute(
                    "UPDATE miniprogram_sessions SET session_key = ? WHERE appid = ? AND openid = ? AND session_key = ?",
                    (self.box.seal(plain, _context(appid, openid)), appid, openid, value),
                )
                changed += 1
        return changed
